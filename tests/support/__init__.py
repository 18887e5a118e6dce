"""What the tests share: helpers, fixtures and the independent reference implementations (some
benchmarks use them too). No test_*.py here: pytest collects none of it."""
