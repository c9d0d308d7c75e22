"""Write a few dull, noisy sample photos for the image-enhance pipeline to fix.

    python examples/pipelines/image-enhance/make_samples.py [DIR] [--count N] [--start K]

DIR defaults to ``in/`` beside this script (the directory the pipeline watches). The images
are drawn with Pillow rather than shipped, so the repository holds no binary files: a sky
gradient, a sun and hills, squeezed into a narrow band of grey levels (for autocontrast to
stretch) with speckle noise (for the median filter to remove). Each is larger than 1024 px on
its long side, for the resize to shrink. The same arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZES = [(1600, 1200), (1200, 1600), (2048, 1152), (1400, 1050)]


def sample(index: int) -> Image.Image:
    """Sample ``index``: a landscape whose colours sit between 90 and 165, with noise."""
    rng = random.Random(index)
    width, height = SIZES[index % len(SIZES)]
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    sun = (rng.randint(width // 5, width * 4 // 5), height // 4)
    radius = min(width, height) // 10
    draw.ellipse([sun[0] - radius, sun[1] - radius, sun[0] + radius, sun[1] + radius],
                 fill=(250, 220, 120))  # fmt: skip
    for hill in range(3):
        top = height // 2 + hill * height // 10
        points = [(x, top + rng.randint(-height // 12, height // 12))
                  for x in range(0, width + 200, 200)]  # fmt: skip
        shade = 60 + hill * 40
        draw.polygon([(0, height), *points, (width, height)], fill=(shade // 2, shade, shade // 3))
    dull = image.point(lambda v: 90 + v * 75 // 255)  # every channel squeezed into 90..165
    for _ in range(width * height // 200):  # speckles
        dull.putpixel((rng.randrange(width), rng.randrange(height)), (rng.choice((0, 255)),) * 3)
    return dull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=Path(__file__).parent / "in")
    parser.add_argument("--count", type=int, default=3, help="How many images (default 3).")
    parser.add_argument("--start", type=int, default=1, help="The first image's number.")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    for index in range(args.start, args.start + args.count):
        target = args.dir / f"sample-{index}.jpg"
        partial = target.with_name(f".{target.name}.part")  # the watcher ignores dot files
        sample(index).save(partial, format="JPEG", quality=90)
        partial.replace(target)
        print(target)


if __name__ == "__main__":
    main()
