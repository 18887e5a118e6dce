"""Subject preparation: target video -> subject directory (layout, stages, previews)."""
