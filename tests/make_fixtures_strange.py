#!/usr/bin/python3
"""Strange-but-valid image and DICOM files for `data: image strange-but-valid files ...`
(tests/data/strange.cpp, docs/reliability.md "Strange but valid files").

Each file is made by a Debian or PyPI tool the way other people's files are made (Pillow 9.4,
libjpeg-turbo's cjpeg 2.1, DCMTK 3.6.7's dcmcjpeg / dcmcrle / dcmcjpls / dcmconv, pydicom 2.3),
or by a few lines of Python where no tool writes the variant (interlaced PNG, BMP headers).
Every one must either decode to the image the reference library gives (within the tolerance
recorded in the manifest) or raise one named error saying what is unsupported.

Regenerate (Debian python and tools):
    apt-get install python3-pydicom dcmtk libjpeg-turbo-progs    # once
    cd /work/main && /usr/bin/python3 tests/make_fixtures_strange.py

Writes:
  tests/fixtures/strange/*                the files (each a few KB)
  tests/fixtures/strange/manifest.json    one entry per file:
      {"file", "kind": "image" | "dicom", "expect": "decode" | "error",
       "ref": reference key (decode), "max_abs": largest allowed |ours - ref| per sample,
       "mean_abs": largest allowed mean |ours - ref|, "error": a substring the error must
       contain (error), "why": what is strange about it}
  tests/fixtures/strange_refs.safetensors references:
      img/<file>   U8 [H,W,3]   Pillow's Image.open(f).convert('RGB') (what the reference code sees)
      dcm/<file>   U8 / U16 / I16 [H,W(,3)] the first frame's stored values as pydicom's pixel_array gives
                   them; where pydicom 2.3 has no decoder (JPEG lossless / JPEG-LS / 12-bit JPEG)
                   the array that was compressed (lossless) or DCMTK's dcmdjpeg output read
                   by pydicom (lossy 12-bit), as noted per file
      display/<file> U8 [H,W]  the kDisplay mapping of data/image.h (rescale, first VOI window
                   LINEAR / SIGMOID or min-max, MONOCHROME1 inverted) of that array, in numpy
"""
import io
import json
import os
import struct
import subprocess
import tempfile
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "strange")
os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    os.remove(os.path.join(OUT, f))
TMP = tempfile.mkdtemp()
manifest, refs = [], {}


def p(name):
    return os.path.join(OUT, name)


def run(*cmd):
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL)


def picture(w, h, c, seed):
    """Smooth gradients + a disc + mild noise (as tests/make_fixtures_image.py)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        g = 40 + 150 * (x / max(w - 1, 1)) * (0.5 + 0.5 * np.cos(k)) + 60 * (y / max(h - 1, 1))
        g += 70 * (((x - w * (0.3 + 0.2 * k)) ** 2 + (y - h * 0.5) ** 2) < (min(w, h) * 0.3) ** 2)
        g += r.normal(0, 6, size=(h, w))
        chans.append(g)
    a = np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)
    return a if c > 1 else a[..., 0]


def image_ok(name, why, max_abs=0, mean_abs=0.0):
    im = Image.open(p(name))
    refs[f"img/{name}"] = np.ascontiguousarray(np.asarray(im.convert("RGB")))
    manifest.append({"file": name, "kind": "image", "expect": "decode", "ref": f"img/{name}",
                     "max_abs": max_abs, "mean_abs": mean_abs, "why": why})


def image_error(name, why, error):
    manifest.append({"file": name, "kind": "image", "expect": "error", "error": error, "why": why})


W, H = 48, 40
grey, rgb = picture(W, H, 1, 1), picture(W, H, 3, 2)
Image.fromarray(rgb).save(os.path.join(TMP, "rgb.ppm"))
Image.fromarray(grey).save(os.path.join(TMP, "grey.pgm"))
big = picture(160, 120, 3, 3)  # several MCU rows / restart intervals
Image.fromarray(big).save(os.path.join(TMP, "big.ppm"))

# ---- JPEG ------------------------------------------------------------------------------
# medslip decodes JPEG with libjpeg-turbo, the library Debian's Pillow links, with Pillow's
# settings: the pixels are Pillow's exactly (measured 2026-12-06 on every file here; with
# stb_image before that, up to 3 levels apart, mean |d| < 0.16). Any difference is a bug.
JPEG_GREY = dict(max_abs=0, mean_abs=0.0)
JPEG_444 = dict(max_abs=0, mean_abs=0.0)
JPEG_SUB = dict(max_abs=0, mean_abs=0.0)


def cjpeg(name, src, *args):
    run("cjpeg", *args, "-outfile", p(name), os.path.join(TMP, src))


Image.fromarray(grey).save(p("prog_grey_pil.jpg"), quality=90, progressive=True)
image_ok("prog_grey_pil.jpg", "progressive grey (Pillow): several scans, a DHT before each", **JPEG_GREY)
cjpeg("prog_rgb_cjpeg.jpg", "rgb.ppm", "-progressive", "-quality", "85")
image_ok("prog_rgb_cjpeg.jpg", "progressive 4:2:0 (cjpeg): 10 scans, DHT segments between scans", **JPEG_SUB)
cjpeg("prog_444_optimize.jpg", "rgb.ppm", "-progressive", "-sample", "1x1", "-optimize")
image_ok("prog_444_optimize.jpg", "progressive 4:4:4 with optimised tables", **JPEG_444)
cjpeg("restart_rows.jpg", "big.ppm", "-restart", "1", "-quality", "90")
image_ok("restart_rows.jpg", "baseline with a restart marker every MCU row (DRI, RST0-7 in the scan)", **JPEG_SUB)
cjpeg("restart_blocks.jpg", "big.ppm", "-restart", "3B", "-sample", "1x1")
image_ok("restart_blocks.jpg", "baseline 4:4:4, a restart marker every 3 MCUs", **JPEG_444)
cjpeg("prog_restart.jpg", "big.ppm", "-progressive", "-restart", "2")
image_ok("prog_restart.jpg", "progressive with restart markers in every scan", **JPEG_SUB)
cjpeg("grey_restart_1b.jpg", "grey.pgm", "-restart", "1B")
image_ok("grey_restart_1b.jpg", "grey with a restart marker after every block (RST0..7 wrap round)", **JPEG_GREY)
cjpeg("sample_411.jpg", "rgb.ppm", "-sample", "4x1")
image_ok("sample_411.jpg", "4:1:1 chroma subsampling", **JPEG_SUB)
cjpeg("sample_440.jpg", "rgb.ppm", "-sample", "1x2")
image_ok("sample_440.jpg", "4:4:0 chroma subsampling (vertical only)", **JPEG_SUB)
cjpeg("q1_extended.jpg", "grey.pgm", "-quality", "2")
image_ok("q1_extended.jpg", "quality 2: 16-bit quantisation tables (DQT precision 1), SOF1 extended", **JPEG_GREY)
cjpeg("rgb_colorspace.jpg", "rgb.ppm", "-rgb", "-sample", "1x1")
image_ok("rgb_colorspace.jpg", "components stored as RGB (no YCbCr transform, Adobe marker), ids 'R','G','B'", **JPEG_444)
Image.fromarray(rgb).convert("CMYK").save(p("cmyk_adobe.jpg"), quality=95)
image_ok("cmyk_adobe.jpg", "CMYK (Pillow: Adobe APP14, inverted CMYK, 4 components)", **JPEG_444)
ex = Image.Exif()
ex[0x0112] = 6  # Orientation: rotate 90 CW to display
ex[0x010F] = "medslip test"
Image.fromarray(rgb).save(p("exif_rotated.jpg"), quality=90, exif=ex.tobytes())
image_ok("exif_rotated.jpg", "EXIF Orientation 6: decoded as stored (PIL's Image.open ignores it too)", **JPEG_SUB)
icc = bytes(range(256)) * 300  # a 76 KB 'ICC profile': split over two APP2 segments
Image.fromarray(rgb).save(p("big_icc_app2.jpg"), quality=90, icc_profile=icc, comment=b"x" * 1000)
image_ok("big_icc_app2.jpg", "a 76 KB ICC profile over two APP2 segments and a COM segment", **JPEG_SUB)
d = open(p("prog_grey_pil.jpg"), "rb").read()
# Fill bytes (FF FF ...) before a marker are valid (T.81 B.1.1.2); trailing bytes after EOI are common.
i = d.index(b"\xff\xdb")
open(p("fill_bytes_trailer.jpg"), "wb").write(d[:i] + b"\xff\xff\xff" + d[i:] + b"\x00" * 37 + b"trailer")
image_ok("fill_bytes_trailer.jpg", "fill bytes before a marker, junk after EOI", **JPEG_GREY)
cjpeg("arithmetic.jpg", "rgb.ppm", "-arithmetic")
image_error("arithmetic.jpg", "arithmetic-coded (SOF9): PIL decodes it; our marker walk refuses arithmetic coding", "unsupported JPEG: arithmetic-coded")
cjpeg("arith_prog.jpg", "grey.pgm", "-arithmetic", "-progressive")
image_error("arith_prog.jpg", "arithmetic-coded progressive (SOF10)", "unsupported JPEG: arithmetic-coded")

# ---- PNG -------------------------------------------------------------------------------


def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def pack_row(row, bit_depth):
    if bit_depth == 16:
        return row.astype(">u2").tobytes()
    if bit_depth == 8:
        return row.astype(np.uint8).tobytes()
    per = 8 // bit_depth
    vals = list(row.astype(int)) + [0] * ((-len(row)) % per)
    return bytes(sum(v << (8 - bit_depth * (i + 1)) for i, v in enumerate(vals[j:j + per]))
                 for j in range(0, len(vals), per))


def filter_row(raw, prev, bpp, ftype):
    out = bytearray(len(raw))
    for x in range(len(raw)):
        a = raw[x - bpp] if x >= bpp else 0
        b = prev[x] if prev is not None else 0
        c = prev[x - bpp] if (prev is not None and x >= bpp) else 0
        if ftype == 0:
            pr = 0
        elif ftype == 1:
            pr = a
        elif ftype == 2:
            pr = b
        elif ftype == 3:
            pr = (a + b) // 2
        else:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            pr = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
        out[x] = (raw[x] - pr) & 255
    return bytes([ftype]) + bytes(out)


def write_png(name, arr, color_type, bit_depth, interlace=False, palette=None, trns=None, extra=(),
              idat_split=None):
    """PNG writer with every filter type in turn (row k uses filter k % 5), optional Adam7."""
    h, w = arr.shape[:2]
    chans = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp = max(1, chans * bit_depth // 8)

    def encode(sub):
        out, prev = b"", None
        for k in range(sub.shape[0]):
            raw = pack_row(sub[k].reshape(-1), bit_depth)
            out += filter_row(raw, prev, bpp, k % 5)
            prev = raw
        return out

    if interlace:
        data = b""
        for (x0, y0, dx, dy) in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                                 (0, 1, 1, 2)]:
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                data += encode(sub)
    else:
        data = encode(arr)
    z = zlib.compress(data, 9)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                                                   1 if interlace else 0))
    for t, d in extra:
        out += png_chunk(t, d)
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(palette))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    step = idat_split or len(z)
    for j in range(0, len(z), step):
        out += png_chunk(b"IDAT", z[j:j + step])
    out += png_chunk(b"IEND", b"")
    open(p(name), "wb").write(out)


rgba = np.concatenate([rgb, picture(W, H, 1, 4)[..., None]], -1)
g16 = (picture(W, H, 1, 5).astype(np.uint16) * 3 + 7).astype(np.uint16)  # 21..772: the clip matters
write_png("interlaced_grey8.png", grey, 0, 8, interlace=True)
image_ok("interlaced_grey8.png", "Adam7 interlaced grey, every filter type")
write_png("interlaced_rgba16.png", (rgba.astype(np.uint16) * 257 + 3).astype(np.uint16), 6, 16, interlace=True)
image_ok("interlaced_rgba16.png", "Adam7 interlaced 16-bit RGBA (PIL keeps the high byte)")
write_png("interlaced_grey16.png", g16, 0, 16, interlace=True)
image_ok("interlaced_grey16.png", "Adam7 interlaced 16-bit grey (PIL mode I: convert clips to 0..255)")
write_png("interlaced_palette4.png", grey[:, :] >> 4, 3, 4, interlace=True,
          palette=[v for k in range(16) for v in (k * 17, 255 - k * 16, (k * 40) % 256)])
image_ok("interlaced_palette4.png", "Adam7 interlaced 4-bit palette")
write_png("odd_size_interlaced.png", picture(5, 3, 3, 6), 2, 8, interlace=True)
image_ok("odd_size_interlaced.png", "5x3 interlaced RGB: Adam7 passes that are empty")
write_png("grey2.png", grey >> 6, 0, 2)
image_ok("grey2.png", "2-bit grey (scaled by 85, as PIL)")
write_png("palette1.png", (grey > 120).astype(np.uint8), 3, 1, palette=[10, 20, 200, 250, 240, 5])
image_ok("palette1.png", "1-bit palette with two colours")
write_png("palette2_short_plte.png", grey >> 6, 3, 2, palette=[0, 0, 0, 90, 90, 90, 180, 180, 180, 255, 0, 0])
image_ok("palette2_short_plte.png", "2-bit palette, PLTE with exactly 4 entries")
write_png("grey16_trns_sbit.png", g16, 0, 16, trns=struct.pack(">H", int(g16[0, 0])),
          extra=[(b"sBIT", b"\x0a"), (b"gAMA", struct.pack(">I", 45455))])
image_ok("grey16_trns_sbit.png", "16-bit grey with tRNS, sBIT and gAMA chunks")
write_png("la16.png", np.stack([g16 * 80, g16], -1), 4, 16)
image_ok("la16.png", "16-bit grey+alpha (PIL keeps the high byte of grey)")
write_png("rgb16.png", (rgb.astype(np.uint16) * 257 + 11).astype(np.uint16), 2, 16)
image_ok("rgb16.png", "16-bit RGB (high byte)")
text = [(b"tEXt", b"Comment\x00hello"), (b"zTXt", b"Software\x00\x00" + zlib.compress(b"medslip" * 50)),
        (b"iTXt", b"Title\x00\x00\x00en\x00T\x00x" * 1), (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
        (b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(200))), (b"tIME", struct.pack(">HBBBBB", 2026, 12, 5, 1, 2, 3)),
        (b"prVt", b"private ancillary chunk")]
write_png("many_chunks_split_idat.png", rgb, 2, 8, extra=text, idat_split=97)
image_ok("many_chunks_split_idat.png", "ancillary chunks (text, iCCP, pHYs, a private one), IDAT split in 97-byte chunks")
write_png("wide_1px.png", picture(700, 1, 3, 7), 2, 8)
image_ok("wide_1px.png", "700x1")
write_png("one_pixel_rgba.png", np.array([[[200, 100, 50, 0]]], np.uint8), 6, 8)
image_ok("one_pixel_rgba.png", "1x1 RGBA, alpha 0 (PIL drops alpha without compositing)")
frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
frames[0].save(p("apng.png"), save_all=True, append_images=frames[1:], duration=100)
image_ok("apng.png", "animated PNG (acTL/fcTL/fdAT): the default image, as PIL opens it")
Image.fromarray(grey).save(p("pil_optimize.png"), optimize=True)
image_ok("pil_optimize.png", "Pillow optimize=True (zlib level 9, filter choice)")

# ---- BMP -------------------------------------------------------------------------------


def bmp(name, w, h, bpp, pixel_rows, palette=b"", header=40, compression=0, masks=None, top_down=False,
        image_size=None):
    """BMP writer: pixel_rows are the stored rows bottom-up (or top-down), each padded to 4 bytes."""
    data = b"".join(r + b"\x00" * ((-len(r)) % 4) for r in pixel_rows)
    if header == 12:
        dib = struct.pack("<IHHHH", 12, w, h, 1, bpp)
    else:
        dib = struct.pack("<IiiHHIIiiII", header, w, -h if top_down else h, 1, bpp, compression,
                          len(data) if image_size is None else image_size, 2835, 2835,
                          len(palette) // (3 if header == 12 else 4), 0)
        if header >= 52 and masks:
            dib += struct.pack("<III", *masks[:3])
        if header >= 56:
            dib += struct.pack("<I", masks[3] if masks and len(masks) > 3 else 0)
        dib += bytes(header - len(dib))  # colour space, endpoints, gamma, intent, profile: zero
    extra = struct.pack("<III", *masks) if (masks and header == 40) else b""
    off = 14 + len(dib) + len(extra) + len(palette)
    out = b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + dib + extra + palette + data
    open(p(name), "wb").write(out)


def bottom_up(rows):
    return rows[::-1]


bgr_rows = [rgb[y, :, ::-1].tobytes() for y in range(H)]
bmp("top_down_24.bmp", W, H, 24, bgr_rows, top_down=True)
image_ok("top_down_24.bmp", "24-bit, negative height (rows stored top-down)")
bmp("os2_core_24.bmp", W, H, 24, bottom_up(bgr_rows), header=12)
image_ok("os2_core_24.bmp", "OS/2 1.x BITMAPCOREHEADER (12 bytes)")
pal4 = bytes(v for k in range(16) for v in (k * 16, 255 - k * 16, (k * 37) % 256, 0))
rows4 = [pack_row((grey[y] >> 4), 4) for y in range(H)]
bmp("pal4.bmp", W, H, 4, bottom_up(rows4), palette=pal4)
image_ok("pal4.bmp", "4-bit palette")
rows1 = [pack_row((grey[y] > 120).astype(np.uint8), 1) for y in range(H)]
bmp("pal1.bmp", W, H, 1, bottom_up(rows1), palette=bytes([0, 0, 255, 0, 255, 255, 0, 0]))
image_ok("pal1.bmp", "1-bit palette (red / cyan)")
r5 = (rgb[..., 0].astype(np.uint16) >> 3) << 11 | (rgb[..., 1].astype(np.uint16) >> 2) << 5 | rgb[..., 2] >> 3
rows565 = [r5[y].astype("<u2").tobytes() for y in range(H)]
bmp("rgb565_bitfields.bmp", W, H, 16, bottom_up(rows565), compression=3, masks=(0xF800, 0x07E0, 0x001F))
image_ok("rgb565_bitfields.bmp", "16-bit 5-6-5 BI_BITFIELDS (stb and PIL widen 5/6 bits differently: 1 level)", max_abs=1)
x5 = (rgb[..., 0].astype(np.uint16) >> 3) << 10 | (rgb[..., 1].astype(np.uint16) >> 3) << 5 | rgb[..., 2] >> 3
bmp("rgb555.bmp", W, H, 16, bottom_up([x5[y].astype("<u2").tobytes() for y in range(H)]))
image_ok("rgb555.bmp", "16-bit 5-5-5 BI_RGB (1 level, as above)", max_abs=1)
bgrx = np.concatenate([rgb[..., ::-1], np.zeros((H, W, 1), np.uint8)], -1)
bmp("bgrx32.bmp", W, H, 32, bottom_up([bgrx[y].tobytes() for y in range(H)]))
image_ok("bgrx32.bmp", "32-bit BI_RGB with the 4th byte 0")
bmp("v5_bitfields32.bmp", W, H, 32, bottom_up([bgrx[y].tobytes() for y in range(H)]), header=124, compression=3,
    masks=(0x00FF0000, 0x0000FF00, 0x000000FF, 0))
image_ok("v5_bitfields32.bmp", "BITMAPV5HEADER, 32-bit bitfields, no alpha mask")
bmp("size_field_zero.bmp", W, H, 24, bottom_up(bgr_rows), image_size=0)
image_ok("size_field_zero.bmp", "biSizeImage 0 (allowed for BI_RGB)")
# RLE8: PIL decodes it; stb_image does not.
rle = b""
pal8 = bytes(v for k in range(256) for v in (k, k, k, 0))
for y in range(H - 1, -1, -1):
    row = grey[y] & 0xF0
    x = 0
    while x < W:
        n = 1
        while x + n < W and n < 255 and row[x + n] == row[x]:
            n += 1
        rle += bytes([n, row[x]])
        x += n
    rle += b"\x00\x00"
rle = rle[:-2] + b"\x00\x01"
open(p("rle8.bmp"), "wb").write(b"")
bmp("rle8.bmp", W, H, 8, [rle], palette=pal8, compression=1, image_size=len(rle))
image_error("rle8.bmp", "RLE8-compressed BMP (PIL decodes it, stb_image cannot)", "unsupported BMP compression RLE8")

# ---- DICOM -----------------------------------------------------------------------------
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"


def dataset(arr, photometric="MONOCHROME2", bits_stored=None, signed=False, extra=None, frames=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    meta.TransferSyntaxUID = EXPLICIT_LE
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientName = "Strange^Valid"
    shape = arr.shape[1:] if frames else arr.shape
    ds.Rows, ds.Columns = shape[:2]
    ds.SamplesPerPixel = 3 if len(shape) == 3 else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if arr.dtype.itemsize == 1 else 16
    ds.BitsStored = bits_stored or 8 * arr.dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    if frames:
        ds.NumberOfFrames = frames
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated == 16 else "OB"
    return ds


def save(ds, name, syntax=None):
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.is_implicit_VR = syntax == IMPLICIT_LE
        ds.is_little_endian = syntax != EXPLICIT_BE
    ds.save_as(p(name), write_like_original=False)


def dicom_ok(name, why, ref, max_abs=0, mean_abs=0.0, note="pydicom pixel_array"):
    refs[f"dcm/{name}"] = np.ascontiguousarray(ref if ref.dtype in (np.uint8, np.uint16, np.int16) else ref.astype(np.int32))
    manifest.append({"file": name, "kind": "dicom", "expect": "decode", "ref": f"dcm/{name}", "max_abs": max_abs,
                     "mean_abs": mean_abs, "why": why, "reference": note})


def dicom_pydicom_ok(name, why, frame0=False, **kw):
    arr = pydicom.dcmread(p(name)).pixel_array
    dicom_ok(name, why, arr[0] if frame0 else arr, **kw)


def dicom_error(name, why, error):
    manifest.append({"file": name, "kind": "dicom", "expect": "error", "error": error, "why": why})


u12 = (picture(40, 30, 1, 11).astype(np.uint16) * 16 + np.random.default_rng(1).integers(0, 16, (30, 40))).astype(
    np.uint16)
u16 = (u12.astype(np.uint32) * 16 + 5).astype(np.uint16)  # 0..65525: the full 16-bit range
s12 = (u12.astype(np.int32) - 2048).astype(np.int16)  # -2048..2047, sign-extended to 16 bits
u8 = picture(40, 30, 1, 12)
rgb8 = picture(40, 30, 3, 13)

save(dataset(u12, bits_stored=12), "implicit_le.dcm", IMPLICIT_LE)
dicom_pydicom_ok("implicit_le.dcm", "Implicit VR Little Endian, 12 bits stored in 16")
save(dataset(u8), "implicit_le_u8.dcm", IMPLICIT_LE)
dicom_pydicom_ok("implicit_le_u8.dcm", "Implicit VR Little Endian, 8-bit (PixelData is OW by the dictionary)")
save(dataset(u12, bits_stored=12), "explicit_be.dcm", EXPLICIT_BE)
dicom_pydicom_ok("explicit_be.dcm", "Explicit VR Big Endian (retired), 16-bit words byte-swapped")
save(dataset(rgb8, "RGB"), "explicit_be_rgb8.dcm", EXPLICIT_BE)
dicom_pydicom_ok("explicit_be_rgb8.dcm", "Explicit VR Big Endian, 8-bit RGB")
save(dataset(s12, bits_stored=12, signed=True, extra={"RescaleSlope": "1", "RescaleIntercept": "-1024"}),
     "signed12.dcm")
dicom_pydicom_ok("signed12.dcm", "signed, 12 bits stored (sign-extended words), rescale intercept")
s12raw = (s12.astype(np.int32) & 0x0FFF).astype(np.uint16).view(np.int16)
save(dataset(s12raw, bits_stored=12, signed=True), "signed12_not_extended.dcm")
dicom_pydicom_ok("signed12_not_extended.dcm", "signed, 12 bits stored, high 4 bits zero (not sign-extended)")
overlay = (u12 | (np.random.default_rng(2).integers(0, 2, u12.shape) << 15)).astype(np.uint16)
save(dataset(overlay, bits_stored=12, extra={"WindowCenter": "2048", "WindowWidth": "4096"}), "high_bits_set.dcm")
dicom_pydicom_ok("high_bits_set.dcm", "12 bits stored, bit 15 set in some words (old embedded overlays)")
save(dataset(u12, "MONOCHROME1", bits_stored=12,
             extra={"RescaleSlope": "0.5", "RescaleIntercept": "10", "WindowCenter": ["1000", "700"],
                    "WindowWidth": ["2000", "800"], "VOILUTFunction": "SIGMOID"}), "mono1_sigmoid_multiwindow.dcm")
dicom_pydicom_ok("mono1_sigmoid_multiwindow.dcm", "MONOCHROME1, slope 0.5, two windows, VOI LUT function SIGMOID")
ds = dataset(np.ascontiguousarray(rgb8.transpose(2, 0, 1)), "RGB")
ds.SamplesPerPixel, ds.Rows, ds.Columns, ds.PlanarConfiguration = 3, 30, 40, 1
save(ds, "rgb_planar1.dcm")
dicom_pydicom_ok("rgb_planar1.dcm", "RGB, PlanarConfiguration 1 (RRR..GGG..BBB)")
ds = dataset(u12, bits_stored=12)
ds["PixelData"].VR = "OB"
save(ds, "pixeldata_ob_16bit.dcm")
dicom_pydicom_ok("pixeldata_ob_16bit.dcm", "16-bit pixels in a PixelData element of VR OB")
save(dataset(np.stack([u12, 4095 - u12, u12 // 2]), bits_stored=12, frames=3), "multiframe3.dcm")
dicom_pydicom_ok("multiframe3.dcm", "3 frames, uncompressed: the first frame is read (documented)", frame0=True)
ds = dataset(u12, bits_stored=12)
ds.save_as(p("no_preamble_no_meta.dcm"), write_like_original=True)  # raw dataset: no preamble, no meta
with open(p("no_preamble_no_meta.dcm"), "rb") as f:
    raw = f.read()
if raw[128:132] == b"DICM":  # pydicom still wrote a preamble: strip preamble + meta
    ds2 = pydicom.dcmread(p("no_preamble_no_meta.dcm"))
    bio = pydicom.filebase.DicomBytesIO()
    bio.is_little_endian, bio.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(bio, ds2)
    open(p("no_preamble_no_meta.dcm"), "wb").write(bio.getvalue())
dicom_ok("no_preamble_no_meta.dcm", "a bare dataset: no 128-byte preamble, no DICM, no file meta", u12)
seq = dataset(u12, bits_stored=12)
item = Dataset()
item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D3000", "SRT", "Chest"
seq.AnatomicRegionSequence = [item]
seq.add_new(0x00091010, "LO", "private creator")
seq.add_new(0x00091011, "UN", b"\x01\x02\x03\x04")
save(seq, "sequence_private_un.dcm")
dicom_pydicom_ok("sequence_private_un.dcm", "a sequence, a private block and a UN element before the pixels")

# DCMTK's tools: compress src with dcmcjpeg / dcmcrle / dcmcjpls, deflate with dcmconv.
save(dataset(u12, bits_stored=12), "src_u12.dcm")
save(dataset(u16), "src_u16.dcm")
save(dataset(u8), "src_u8.dcm")
save(dataset(rgb8, "RGB"), "src_rgb8.dcm")
save(dataset(s12, bits_stored=12, signed=True), "src_s12.dcm")
save(dataset(np.stack([u12, 4095 - u12, u12 // 2]), bits_stored=12, frames=3), "src_mf.dcm")
srcs = {"u12": u12, "u16": u16, "u8": u8, "rgb8": rgb8, "s12": s12}


def dcmtk(tool, args, src, name):
    run(tool, *args, p(f"src_{src}.dcm"), p(name))


dcmtk("dcmconv", ["+td"], "u12", "deflated.dcm")
dicom_pydicom_ok("deflated.dcm", "Deflated Explicit VR Little Endian (zlib over the whole dataset)")
dcmtk("dcmcjpeg", ["+e1"], "u12", "jpeg_lossless_sv1_u12.dcm")
dicom_ok("jpeg_lossless_sv1_u12.dcm", "JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), 12-bit", u12,
         note="the array compressed (lossless; pydicom 2.3 has no decoder)")
dcmtk("dcmcjpeg", ["+el", "+sv", "7"], "u16", "jpeg_lossless_sv7_u16.dcm")
dicom_ok("jpeg_lossless_sv7_u16.dcm", "JPEG Lossless process 14, predictor 7, 16-bit", u16,
         note="the array compressed (lossless)")
dcmtk("dcmcjpeg", ["+e1"], "s12", "jpeg_lossless_s12.dcm")
dicom_ok("jpeg_lossless_s12.dcm", "JPEG Lossless, signed 12-bit", s12, note="the array compressed (lossless)")
dcmtk("dcmcjpeg", ["+e1"], "rgb8", "jpeg_lossless_rgb8.dcm")
dicom_ok("jpeg_lossless_rgb8.dcm", "JPEG Lossless, 8-bit RGB", rgb8, note="the array compressed (lossless)")
dcmtk("dcmcjpeg", ["+ee"], "u12", "jpeg_extended_u12.dcm")
run("dcmdjpeg", p("jpeg_extended_u12.dcm"), os.path.join(TMP, "ext_dec.dcm"))
dicom_ok("jpeg_extended_u12.dcm", "JPEG Extended (process 2 & 4), 12-bit lossy",
         pydicom.dcmread(os.path.join(TMP, "ext_dec.dcm")).pixel_array,
         note="DCMTK dcmdjpeg's decode read by pydicom (no 12-bit decoder in pydicom 2.3)")
# dcmcjpeg's lossy default (+sp) shifts the values to start at the image minimum (identity rescale kept):
# the decode is the source minus a constant, plus JPEG error.
e = refs["dcm/jpeg_extended_u12.dcm"] - u12.astype(np.int32)
assert np.abs(e - np.round(e.mean())).mean() < 20, np.abs(e - e.mean()).mean()
dcmtk("dcmcjpeg", ["+eb"], "u8", "jpeg_baseline_u8.dcm")
dicom_pydicom_ok("jpeg_baseline_u8.dcm", "JPEG Baseline grey from DCMTK (pydicom decodes with Pillow)", **JPEG_GREY)
# The JPEG streams DCMTK wrote, as .jpg files: valid JPEGs that only a few decoders read.
for dcm, jpg, what, err in [("jpeg_extended_u12.dcm", "twelve_bit_sof1.jpg", "12-bit extended (SOF1, P=12)", "12-bit"),
                            ("jpeg_lossless_sv1_u12.dcm", "lossless_sof3.jpg", "lossless (SOF3)", "lossless")]:
    frame = next(pydicom.encaps.generate_pixel_data_frame(pydicom.dcmread(p(dcm)).PixelData))
    open(p(jpg), "wb").write(frame)
    image_error(jpg, what + " JPEG, taken out of a DCMTK DICOM", err)
dcmtk("dcmcjpeg", ["+ep"], "u8", "jpeg_progressive_u8.dcm")
run("dcmdjpeg", p("jpeg_progressive_u8.dcm"), os.path.join(TMP, "prog_dec.dcm"))
dicom_ok("jpeg_progressive_u8.dcm", "JPEG Full Progression (retired 1.2.840.10008.1.2.4.55)",
         pydicom.dcmread(os.path.join(TMP, "prog_dec.dcm")).pixel_array, **JPEG_GREY,
         note="DCMTK dcmdjpeg's decode read by pydicom")
dcmtk("dcmcrle", [], "u16", "rle_u16.dcm")
dicom_pydicom_ok("rle_u16.dcm", "RLE Lossless, 16-bit (two byte segments)")
dcmtk("dcmcrle", [], "rgb8", "rle_rgb8.dcm")
dicom_pydicom_ok("rle_rgb8.dcm", "RLE Lossless, 8-bit RGB (three segments)")
dcmtk("dcmcrle", [], "s12", "rle_s12.dcm")
dicom_pydicom_ok("rle_s12.dcm", "RLE Lossless, signed 12-bit")
dcmtk("dcmcrle", [], "mf", "rle_multiframe.dcm")
dicom_pydicom_ok("rle_multiframe.dcm", "RLE Lossless, 3 frames (one fragment each): the first frame", frame0=True)
dcmtk("dcmcjpls", [], "u12", "jpegls_u12.dcm")
dicom_ok("jpegls_u12.dcm", "JPEG-LS Lossless (1.2.840.10008.1.2.4.80), 12-bit", u12,
         note="the array compressed (lossless; pydicom 2.3 has no decoder)")
dcmtk("dcmcjpls", ["+en", "+md", "2"], "u8", "jpegls_near_u8.dcm")
run("dcmdjpls", p("jpegls_near_u8.dcm"), os.path.join(TMP, "jls_dec.dcm"))
dicom_ok("jpegls_near_u8.dcm", "JPEG-LS near-lossless (max deviation 2), 8-bit",
         pydicom.dcmread(os.path.join(TMP, "jls_dec.dcm")).pixel_array, note="DCMTK dcmdjpls's decode")
assert np.abs(refs["dcm/jpegls_near_u8.dcm"] - u8.astype(np.int32)).max() <= 2
# JPEG 2000 (Pillow's OpenJPEG encoder, encapsulated by pydicom): DCMTK has no free decoder.
buf = io.BytesIO()
Image.fromarray(u8).save(buf, format="JPEG2000", irreversible=False)
ds = dataset(u8)
ds.PixelData = encapsulate([buf.getvalue()])
ds["PixelData"].VR = "OB"
ds["PixelData"].is_undefined_length = True
save(ds, "j2k_lossless_u8.dcm", "1.2.840.10008.1.2.4.90")
dicom_error("j2k_lossless_u8.dcm", "JPEG 2000 Lossless: no decoder in Debian's DCMTK", "unsupported DICOM transfer syntax JPEG 2000")
# Photometric interpretations and depths outside what the model reads: named errors.
ybr = dataset(rgb8, "YBR_FULL")
save(ybr, "ybr_full_uncompressed.dcm")
dicom_error("ybr_full_uncompressed.dcm", "uncompressed YBR_FULL", "YBR_FULL")
pal = dataset(u8, "PALETTE COLOR")
pal.RedPaletteColorLookupTableDescriptor = [256, 0, 16]
save(pal, "palette_color.dcm")
dicom_error("palette_color.dcm", "PALETTE COLOR", "PALETTE COLOR")
b32 = dataset((u12.astype(np.uint32) * 1000).astype(np.uint32))
b32.BitsAllocated, b32.BitsStored, b32.HighBit = 32, 32, 31
save(b32, "bits32.dcm")
dicom_error("bits32.dcm", "BitsAllocated 32", "BitsAllocated 32")



def display_reference(ds, raw):
    """data/image.h's kDisplay mapping in numpy (our definition; as tests/make_fixtures_image.py,
    plus SIGMOID and multi-valued windows, of which the first is used)."""
    v = raw.astype(np.int64)
    bs = int(ds.BitsStored)
    v = v & ((1 << bs) - 1)
    if int(ds.PixelRepresentation) == 1:
        v = np.where(v >> (bs - 1) & 1, v - (1 << bs), v)
    m = v * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    if "WindowCenter" in ds:
        first = lambda x: float(x[0]) if isinstance(x, pydicom.multival.MultiValue) else float(x)
        c, w = first(ds.WindowCenter), first(ds.WindowWidth)
        if str(getattr(ds, "VOILUTFunction", "LINEAR")).strip() == "SIGMOID":
            y = 255.0 / (1.0 + np.exp(-4.0 * (m - c) / w))
        else:
            y = np.where(m <= c - 0.5 - (w - 1) / 2, 0.0,
                         np.where(m > c - 0.5 + (w - 1) / 2, 255.0, ((m - (c - 0.5)) / (w - 1) + 0.5) * 255.0))
    else:
        y = (m - m.min()) / max(m.max() - m.min(), 1e-300) * 255.0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255.0 - y
    return np.floor(np.clip(y, 0, 255) + 0.5).astype(np.uint8)


for e in manifest:  # the display mapping of every grey DICOM that decodes
    if e["kind"] == "dicom" and e["expect"] == "decode":
        ds = pydicom.dcmread(p(e["file"]), stop_before_pixels=True, force=True)
        if int(ds.SamplesPerPixel) == 1:
            refs[f"display/{e['file']}"] = display_reference(ds, refs[e["ref"]])
            e["display"] = f"display/{e['file']}"

for f in os.listdir(OUT):
    if f.startswith("src_"):
        os.remove(p(f))
manifest.sort(key=lambda e: e["file"])
with open(p("manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
    f.write("\n")
save_file(refs, os.path.join(HERE, "fixtures", "strange_refs.safetensors"))
total = sum(os.path.getsize(p(f)) for f in os.listdir(OUT))
print(f"{len(manifest)} files ({total // 1024} KB), {len(refs)} references")
