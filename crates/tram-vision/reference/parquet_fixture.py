"""A tiny image data set in the Hugging Face parquet layout, for tests/parquet.rs.

The Hub stores image data sets (CIFAR-100, Stanford Cars, Oxford Flowers, ...) as parquet files with an image
column of struct {bytes: binary, path: string} and an integer label column; the class names are in the file's
key-value metadata under "huggingface" (features -> <label column> -> names). This writes 6 PNG images of two
classes (red and blue squares) in that layout, one of them with corrupt bytes, and a variant with a plain binary
image column, as CIFAR-style files do (`img`, `fine_label`).

    ~/.cache/tram/venv/bin/pip install pyarrow pillow
    ~/.cache/tram/venv/bin/python crates/tram-vision/reference/parquet_fixture.py
"""

import io
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures"
COLOURS = {0: (220, 20, 20), 1: (20, 20, 220)}


def png(colour, size):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def main():
    labels = [0, 1, 0, 1, 0, 1]
    images = [png(COLOURS[l], 8 + i) for i, l in enumerate(labels)]
    images[3] = b"\x89PNG but not really"
    hf = {"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": ["red", "blue"], "_type": "ClassLabel"},
    }}}
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)], type=image_type),
        "label": pa.array(labels, type=pa.int64()),
    }).replace_schema_metadata({"huggingface": json.dumps(hf)})
    pq.write_table(table, OUT / "tiny-images.parquet", compression="snappy")
    plain = pa.table({"img": pa.array(images, type=pa.binary()), "fine_label": pa.array(labels, type=pa.int32())})
    pq.write_table(plain, OUT / "tiny-images-plain.parquet", compression="snappy")
    print("wrote", OUT / "tiny-images.parquet", OUT / "tiny-images-plain.parquet")


if __name__ == "__main__":
    main()
