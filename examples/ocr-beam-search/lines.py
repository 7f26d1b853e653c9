"""Write three text lines of scikit-image's scanned page (page.png) as title.png, first.png and
second.png in the current folder: python examples/ocr-beam-search/lines.py (from the repo root)."""

from PIL import Image

from tools import zoo

LINES = {"title": (7, 13, 292, 33), "first": (4, 47, 378, 66), "second": (3, 64, 379, 85)}

if __name__ == "__main__":
    page = Image.open(zoo.fetch("page.png")).convert("RGB")
    for name, box in LINES.items():
        page.crop(box).save(f"{name}.png")
        print(f"{name}.png")
