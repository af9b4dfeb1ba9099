#!/usr/bin/python3
"""Fixtures for tests/data/image.cpp (suite "data: image ...").

Regenerate (Debian python: Pillow 9.4, torch 1.13 / torchvision 0.14, numpy 1.24, and
python3-pydicom 2.3, python3-skimage 0.19, python3-opencv 4.6, safetensors):
    apt-get install python3-pydicom python3-skimage python3-opencv      # once
    /usr/bin/python3 -m pip install --break-system-packages safetensors  # once
    cd /work/main && /usr/bin/python3 tests/make_fixtures_image.py

Reads ../shared/data (CXR14 PNGs, the SIIM-ACR DICOM) when present; nothing from it is
copied into the repository, only small derived references (resized outputs, histograms).

Writes:
  tests/fixtures/images/*        small test inputs made here: PNG (1/4/8/16-bit grey, grey+alpha
                                 8/16, RGB 8/16, RGBA, palette, palette+tRNS, grey+tRNS), JPEG
                                 (grey, 4:2:0, 4:4:4, progressive, odd size), BMP (24-bit,
                                 8-bit palette, 32-bit), DICOM (16-bit MONOCHROME2 with rescale
                                 + window, MONOCHROME1, signed, RGB planar, JPEG baseline grey),
                                 and damaged files (truncated PNG/JPEG/BMP/DICOM, empty, random
                                 bytes, text named .png, corrupt PNG data) - each checked to
                                 fail in PIL / pydicom as well.
  tests/fixtures/image_refs.safetensors  references (uint8 unless noted):
    decode/<file>            PIL Image.open(f).convert('RGB')                 [H,W,3]
    resize/<file>/<w>x<h>/<bilinear|bicubic>   PIL .resize((w,h), filter)     [h,w,3]
    tensor/<file>/<S>        torchvision Resize([S,S]) + ToTensor + Normalize  F32 [3,S,S]
    crop/<file>/<l>,<t>,<w>,<h>/<S>  torchvision F.resized_crop(.., [S,S], BICUBIC) [S,S,3]
    aug/<img>/<op>           ALBEF randaugment.py op on img (see aug_reference) [H,W,3]
    aug_input/<img>          the RandAugment inputs                              [H,W,3]
    cxr/<id>/<S>             test transform of a shared CXR14 PNG, before ToTensor [S,S] (grey)
    dcm/<file>/raw           pydicom pixel_array (its dtype: U8 / U16 / I16)     [H,W(,3)]
                             (YBR JPEG: Pillow's RGB decode of the frame)
    dcm/<file>/rsna          dataset_RSNA.read_dcm: equalize_hist(raw/255)*255 -> uint8
    dcm/<file>/display       our documented display mapping (numpy, see display_reference)
    siim/raw_hist (I64 [256]), siim/raw_sub ([128,128], every 8th pixel), siim/rsna_lut ([256],
    value -> equalised value, 0 where absent), siim/rsna_hist (I64 [256]), siim/rsna_224 (the
    RSNA path + test transform at 224, before ToTensor, [224,224])
"""
import io
import os
import struct
import zlib

import cv2
import numpy as np
import pydicom
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from safetensors.numpy import save_file
from skimage import exposure

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
IMG = os.path.join(OUT, "images")
SHARED = os.environ.get("MEDSLIP_SHARED", os.path.join(HERE, "..", "..", "shared"))
os.makedirs(IMG, exist_ok=True)
rng = np.random.default_rng(1234)
refs = {}


def p(name):
    return os.path.join(IMG, name)


# ---- test pictures -------------------------------------------------------------------
def picture(w, h, c, seed):
    """Smooth gradients + a disc + noise: exercises both flat areas and edges."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        g = 40 + 150 * (x / max(w - 1, 1)) * (0.5 + 0.5 * np.cos(k)) + 60 * (y / max(h - 1, 1))
        g += 70 * (((x - w * (0.3 + 0.2 * k)) ** 2 + (y - h * 0.5) ** 2) < (min(w, h) * 0.3) ** 2)
        g += r.normal(0, 12, size=(h, w))
        chans.append(g)
    a = np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)
    return a if c > 1 else a[..., 0]


def write_png_raw(path, arr, color_type, bit_depth, palette=None, trns=None):
    """Minimal PNG writer for the modes PIL cannot save (16-bit RGB / LA, 4-bit grey)."""
    h, w = arr.shape[:2]
    rows = []
    for yy in range(h):
        row = arr[yy].reshape(-1)
        if bit_depth == 16:
            data = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            data = row.astype(np.uint8).tobytes()
        else:
            per = 8 // bit_depth
            vals = list(row.astype(int)) + [0] * ((-len(row)) % per)
            data = bytes(sum(v << (8 - bit_depth * (i + 1)) for i, v in enumerate(vals[j:j + per]))
                         for j in range(0, len(vals), per))
        rows.append(b"\x00" + data)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", bytes(palette))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


W, H = 48, 40
grey = picture(W, H, 1, 1)
rgb = picture(W, H, 3, 2)
alpha = picture(W, H, 1, 3)
files = []


def save(name, im, **kw):
    im.save(p(name), **kw)
    files.append(name)


save("grey8.png", Image.fromarray(grey))
g16 = (picture(W, H, 1, 4).astype(np.uint16) * 5 + rng.integers(0, 5, (H, W))).astype(np.uint16)  # 0..1279
save("grey16.png", Image.fromarray(g16))
save("grey1.png", Image.fromarray(grey > 128))
write_png_raw(p("grey4.png"), grey >> 4, 0, 4)
files.append("grey4.png")
save("la8.png", Image.fromarray(np.stack([grey, alpha], -1), "LA"))
write_png_raw(p("la16.png"), np.stack([g16 * 40, alpha.astype(np.uint16) * 257], -1), 4, 16)
files.append("la16.png")
save("rgb8.png", Image.fromarray(rgb))
write_png_raw(p("rgb16.png"), rgb.astype(np.uint16) * 257 + rng.integers(0, 256, rgb.shape).astype(np.uint16), 2, 16)
files.append("rgb16.png")
save("rgba8.png", Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA"))
pal = Image.fromarray(rgb).quantize(colors=37)
save("palette.png", pal)
pal.info["transparency"] = 5
save("palette_trns.png", pal, transparency=5)
write_png_raw(p("grey_trns.png"), grey, 0, 8, trns=struct.pack(">H", int(grey[0, 0])))
files.append("grey_trns.png")
save("grey.jpg", Image.fromarray(grey), quality=90)
save("rgb420.jpg", Image.fromarray(rgb), quality=90)
save("rgb444.jpg", Image.fromarray(rgb), quality=90, subsampling=0)
save("rgb_prog.jpg", Image.fromarray(rgb), quality=85, progressive=True)
rgb_odd = picture(37, 29, 3, 5)
save("rgb_odd.jpg", Image.fromarray(rgb_odd), quality=90)
save("rgb24.bmp", Image.fromarray(rgb))
save("grey8.bmp", Image.fromarray(grey))
save("rgba32.bmp", Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA"))
save("rgb_tall.png", Image.fromarray(picture(30, 52, 3, 6)))

for name in files:
    im = Image.open(p(name))
    refs[f"decode/{name}"] = np.asarray(im.convert("RGB"))
    print(f"{name:18s} PIL mode {im.mode:5s} {im.size}")

# 16-bit grey: PIL opens mode "I" and convert('RGB') clips (documented in data/image.h).
assert Image.open(p("grey16.png")).mode == "I"
assert (refs["decode/grey16.png"][..., 0] == np.minimum(g16, 255)).all()

# ---- resize (PIL) and the test transform (torchvision) -------------------------------
for name in ["grey8.png", "rgb8.png", "rgb_tall.png", "rgb420.jpg", "palette.png"]:
    im = Image.open(p(name)).convert("RGB")
    for (w, h) in [(24, 24), (56, 56), (31, 17), (13, 60)]:
        for fname, flt in [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)]:
            if name != "rgb8.png" and fname == "bicubic":
                continue
            refs[f"resize/{name}/{w}x{h}/{fname}"] = np.asarray(im.resize((w, h), flt))
    for S in [24] + ([56] if name == "rgb8.png" else []):
        tt = T.Compose([T.Resize([S, S]), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        ten = tt(im).numpy()
        refs[f"tensor/{name}/{S}"] = ten.astype(np.float32)
        # The float tensor is a per-channel table of the 8-bit resize (what the C++ uses).
        u8 = np.asarray(im.resize((S, S), Image.BILINEAR)).astype(np.float32)
        mean = np.array([0.485, 0.456, 0.406], np.float32)
        std = np.array([0.229, 0.224, 0.225], np.float32)
        lut = ((u8 / np.float32(255) - mean) / std).transpose(2, 0, 1)
        assert np.array_equal(lut, ten), f"ToTensor/Normalize is not the float32 table for {name}"

# RandomResizedCrop's crop + bicubic resize (torchvision F.resized_crop on PIL).
for name, boxes in [("rgb8.png", [(5, 7, 30, 20), (0, 0, 48, 40), (40, 30, 8, 10)]),
                    ("grey8.png", [(3, 2, 41, 33)])]:
    im = Image.open(p(name)).convert("RGB")
    for (l, t, w, h) in boxes:
        for S in [24, 64]:
            out = TF.resized_crop(im, t, l, h, w, [S, S], T.InterpolationMode.BICUBIC)
            assert np.array_equal(np.asarray(out), np.asarray(im.crop((l, t, l + w, t + h)).resize((S, S), Image.BICUBIC)))
            refs[f"crop/{name}/{l},{t},{w},{h}/{S}"] = np.asarray(out)

# RandomResizedCrop's central fallback on a 1000x10 image: no try can fit, so (0, 493, 10, 13).
assert T.RandomResizedCrop.get_params(Image.new("RGB", (1000, 10)), (0.2, 1.0), (3 / 4, 4 / 3)) == (0, 493, 10, 13)


# ---- ALBEF RandAugment ops (dataset/randaugment.py, re-stated with numpy/OpenCV) -----
def albef_autocontrast(img):  # the original, including its uint8 `-low` wrap
    out = []
    for ch in cv2.split(img):
        high, low = ch.max(), ch.min()
        if high <= low:
            table = np.arange(256)
        else:
            scale = 255 / (high - low)
            with np.errstate(over="ignore"):
                offset = -low * scale
            table = np.arange(256) * scale + offset
            table[table < 0] = 0
            table[table > 255] = 255
        out.append(table.clip(0, 255).astype(np.uint8)[ch])
    return cv2.merge(out)


def albef_equalize(img):
    out = []
    for ch in cv2.split(img):
        hist = cv2.calcHist([ch], [0], None, [256], [0, 256])
        nz = hist[hist != 0].reshape(-1)
        step = np.sum(nz[:-1]) // 255
        if step == 0:
            out.append(ch)
            continue
        n = np.empty_like(hist)
        n[0] = step // 2
        n[1:] = hist[:-1]
        out.append((np.cumsum(n) // step).clip(0, 255).astype(np.uint8)[ch])
    return cv2.merge(out)


def albef_brightness(img, factor):
    return (np.arange(256, dtype=np.float32) * factor).clip(0, 255).astype(np.uint8)[img]


def albef_sharpness(img, factor, clip):
    kernel = np.ones((3, 3), dtype=np.float32)
    kernel[1][1] = 5
    kernel /= 13
    degenerate = cv2.filter2D(img, -1, kernel)
    out = img.astype(np.float32)
    degenerate = degenerate.astype(np.float32)[1:-1, 1:-1, :]
    out[1:-1, 1:-1, :] = degenerate + factor * (out[1:-1, 1:-1, :] - degenerate)
    if clip:  # our documented fix (§H.6)
        out = out.clip(0, 255)
    else:  # the original wraps; make the wrap explicit (float -> uint8 is undefined outside 0..255)
        out = np.trunc(out).astype(np.int64) % 256
    return out.astype(np.uint8)


FILL = (128, 128, 128)


def warp(img, M):
    H_, W_ = img.shape[:2]
    return cv2.warpAffine(img, M, (W_, H_), borderValue=FILL, flags=cv2.INTER_LINEAR).astype(np.uint8)


def albef_rotate(img, degree):
    H_, W_ = img.shape[0], img.shape[1]
    M = cv2.getRotationMatrix2D((W_ / 2, H_ / 2), degree, 1)
    return cv2.warpAffine(img, M, (W_, H_), borderValue=FILL)


level = 7 / 10
enh = level * 1.8 + 0.1       # 1.36
shear = level * 0.3           # 0.21
trans = level * float(10)     # 7 px
rot = level * 30              # 21 degrees
aug_inputs = {
    "rgb": picture(40, 32, 3, 7),
    "odd": picture(37, 29, 3, 8),
}
g = picture(40, 32, 1, 9)
aug_inputs["grey"] = np.stack([g, g, g], -1)
sh = picture(40, 32, 3, 10)
sh[::4, :, :] = 255  # hard edges: the sharpness blend leaves 0..255 here
sh[:, ::5, 1] = 0
aug_inputs["edges"] = sh
for k, img in aug_inputs.items():
    img = np.ascontiguousarray(img)
    refs[f"aug_input/{k}"] = img
    ops = {
        "Identity": img,
        "AutoContrast": np.asarray(ImageOps.autocontrast(Image.fromarray(img))),
        "Equalize": np.asarray(ImageOps.equalize(Image.fromarray(img))),
        "Brightness": albef_brightness(img, enh),
        "Sharpness": albef_sharpness(img, enh, clip=True),
        "ShearX+": warp(img, np.float32([[1, shear, 0], [0, 1, 0]])),
        "ShearX-": warp(img, np.float32([[1, -shear, 0], [0, 1, 0]])),
        "ShearY+": warp(img, np.float32([[1, 0, 0], [shear, 1, 0]])),
        "ShearY-": warp(img, np.float32([[1, 0, 0], [-shear, 1, 0]])),
        "TranslateX+": warp(img, np.float32([[1, 0, -trans], [0, 1, 0]])),
        "TranslateX-": warp(img, np.float32([[1, 0, trans], [0, 1, 0]])),
        "TranslateY+": warp(img, np.float32([[1, 0, 0], [0, 1, -trans]])),
        "TranslateY-": warp(img, np.float32([[1, 0, 0], [0, 1, trans]])),
        "Rotate+": albef_rotate(img, rot),
        "Rotate-": albef_rotate(img, -rot),
        "Rotate7.3": albef_rotate(img, 7.3),
    }
    assert np.array_equal(ops["Equalize"], albef_equalize(img)), "ALBEF equalize != PIL equalize"
    ac = albef_autocontrast(img)
    wrapped = albef_sharpness(img, enh, clip=False)
    print(f"aug {k}: ALBEF autocontrast differs from PIL on {np.mean(ac != ops['AutoContrast']) * 100:.1f}% "
          f"of samples (channel minima {[int(c.min()) for c in cv2.split(img)]}); sharpness wraps on "
          f"{int((wrapped != ops['Sharpness']).sum())} samples")
    keep = {"odd": ["Identity", "Rotate+", "Rotate-", "Rotate7.3", "ShearX+", "ShearY-"],
            "edges": ["Identity", "AutoContrast", "Equalize", "Sharpness", "Brightness"]}.get(k, list(ops))
    for op in keep:
        refs[f"aug/{k}/{op}"] = np.ascontiguousarray(ops[op])

# ---- DICOM ---------------------------------------------------------------------------
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def make_dicom(path, arr, photometric, bits_stored, signed, syntax=EXPLICIT_LE, extra=None, pixel_bytes=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL_422") else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if arr.dtype.itemsize == 1 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if pixel_bytes is not None:
        ds.PixelData = pixel_bytes
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW" if ds.BitsAllocated == 16 else "OB"
    ds.save_as(path, write_like_original=False)


def rsna_reference(raw):
    img = raw.astype(float) / 255.
    img = exposure.equalize_hist(img)
    return (255 * img).astype(np.uint8)


def display_reference(ds, raw):
    """The kDisplay mapping of data/image.h in numpy (our definition, not a library's)."""
    v = raw.astype(np.int64)
    bs = int(ds.BitsStored)
    v = v & ((1 << bs) - 1)
    if int(ds.PixelRepresentation) == 1:
        v = np.where(v >> (bs - 1) & 1, v - (1 << bs), v)
    m = v * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    if "WindowCenter" in ds:
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        y = np.where(m <= c - 0.5 - (w - 1) / 2, 0.0,
                     np.where(m > c - 0.5 + (w - 1) / 2, 255.0, ((m - (c - 0.5)) / (w - 1) + 0.5) * 255.0))
    else:
        y = (m - m.min()) / (m.max() - m.min()) * 255.0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255.0 - y
    return np.floor(np.clip(y, 0, 255) + 0.5).astype(np.uint8)  # round half up (std::lround)


u12 = (picture(40, 30, 1, 11).astype(np.uint16) * 16 + rng.integers(0, 16, (30, 40))).astype(np.uint16)
make_dicom(p("mono2_u16.dcm"), u12, "MONOCHROME2", 12, False,
           extra={"RescaleSlope": "2", "RescaleIntercept": "-100", "WindowCenter": "3000", "WindowWidth": "4000"})
make_dicom(p("mono1_u16.dcm"), u12, "MONOCHROME1", 12, False)
s16 = (picture(40, 30, 1, 12).astype(np.int16) * 8 - 1000).astype(np.int16)
make_dicom(p("mono2_s16.dcm"), s16, "MONOCHROME2", 16, True, extra={"RescaleIntercept": "-24"})
make_dicom(p("rgb8.dcm"), picture(40, 30, 3, 13), "RGB", 8, False)
buf = io.BytesIO()
jpeg_src = picture(64, 48, 1, 14)
Image.fromarray(jpeg_src).save(buf, format="JPEG", quality=90)
make_dicom(p("jpeg_mono8.dcm"), jpeg_src, "MONOCHROME2", 8, False, syntax=JPEG_BASELINE,
           pixel_bytes=encapsulate([buf.getvalue()]))
buf = io.BytesIO()
Image.fromarray(picture(64, 48, 3, 15)).save(buf, format="JPEG", quality=90)
make_dicom(p("jpeg_ybr.dcm"), picture(64, 48, 3, 15), "YBR_FULL_422", 8, False, syntax=JPEG_BASELINE,
           pixel_bytes=encapsulate([buf.getvalue()]))
for name in ["mono2_u16.dcm", "mono1_u16.dcm", "mono2_s16.dcm", "rgb8.dcm", "jpeg_mono8.dcm", "jpeg_ybr.dcm"]:
    ds = pydicom.dcmread(p(name))
    raw = ds.pixel_array
    if ds.PhotometricInterpretation == "YBR_FULL_422":
        # pydicom 2.3's Pillow handler returns YCbCr here (it leaves the colour conversion to
        # the user); DCMTK converts to RGB, so the reference is Pillow's RGB decode of the frame.
        frame = next(generate_pixel_data_frame(ds.PixelData))
        raw = np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"))
    refs[f"dcm/{name}/raw"] = raw  # uint8 / uint16 / int16 as pydicom gives it
    refs[f"dcm/{name}/rsna"] = rsna_reference(raw)
    if ds.SamplesPerPixel == 1:
        refs[f"dcm/{name}/display"] = display_reference(ds, raw)
    print(f"{name:16s} {ds.PhotometricInterpretation:12s} raw {raw.dtype} {raw.shape} [{raw.min()}, {raw.max()}]")

if os.path.exists(os.path.join(SHARED, "data", "dicom", "siim-acr-sample.dcm")):
    raw = pydicom.dcmread(os.path.join(SHARED, "data", "dicom", "siim-acr-sample.dcm")).pixel_array
    eq = rsna_reference(raw)
    lut = np.zeros(256, np.uint8)
    for v in np.unique(raw):
        vals = np.unique(eq[raw == v])
        assert len(vals) == 1
        lut[v] = vals[0]
    refs["siim/raw_hist"] = np.bincount(raw.reshape(-1), minlength=256).astype(np.int64)
    refs["siim/raw_sub"] = np.ascontiguousarray(raw[::8, ::8]).astype(np.uint8)
    refs["siim/rsna_lut"] = lut
    refs["siim/rsna_hist"] = np.bincount(eq.reshape(-1), minlength=256).astype(np.int64)
    refs["siim/rsna_224"] = np.asarray(Image.fromarray(eq).convert("RGB").resize((224, 224), Image.BILINEAR))[..., 0].copy()
    print(f"siim: raw {raw.shape} [{raw.min()}, {raw.max()}], equalised mean {eq.mean():.3f}")
else:
    print("skipping the shared SIIM DICOM: not found under", SHARED)

cxr_dir = os.path.join(SHARED, "data", "cxr14-sample", "images")
if os.path.isdir(cxr_dir):
    for name in sorted(os.listdir(cxr_dir))[:3]:
        im = Image.open(os.path.join(cxr_dir, name)).convert("RGB")
        for S in [224, 128]:
            a = np.asarray(im.resize((S, S), Image.BILINEAR))
            assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
            refs[f"cxr/{name[:-4]}/{S}"] = a[..., 0].copy()
else:
    print("skipping the shared CXR14 PNGs: not found under", cxr_dir)

# ---- damaged files: each must fail in PIL (or pydicom) too ---------------------------
with open(p("rgb8.png"), "rb") as f:
    png = f.read()
with open(p("rgb420.jpg"), "rb") as f:
    jpg = f.read()
with open(p("rgb24.bmp"), "rb") as f:
    bmp = f.read()
with open(p("mono2_u16.dcm"), "rb") as f:
    dcm = f.read()
bad = {
    "bad_truncated.png": png[: len(png) // 2],
    "bad_truncated.jpg": jpg[: len(jpg) * 2 // 3],
    "bad_truncated.bmp": bmp[: len(bmp) - 500],
    "bad_truncated.dcm": dcm[: len(dcm) - 700],
    "bad_empty.png": b"",
    "bad_random.png": rng.integers(0, 256, 3000).astype(np.uint8).tobytes(),
    "bad_text.png": b"this is a text file, renamed to .png\n" * 4,
    "bad_header.jpg": jpg[:2] + b"\xff\xc0\x00\x05garbage" + jpg[40:],
}
idat = png.index(b"IDAT")
bad["bad_data.png"] = png[: idat + 20] + bytes(b ^ 0x5A for b in png[idat + 20: idat + 220]) + png[idat + 220:]
for name, data in bad.items():
    with open(p(name), "wb") as f:
        f.write(data)
    try:
        if name.endswith(".dcm"):
            pydicom.dcmread(p(name)).pixel_array
        else:
            Image.open(p(name)).convert("RGB")
        raise SystemExit(f"{name}: PIL/pydicom accepted it; it is not a useful damaged file")
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        print(f"{name:20s} PIL/pydicom: {type(e).__name__}: {str(e)[:70]}")

save_file({k: np.ascontiguousarray(v) for k, v in refs.items()}, os.path.join(OUT, "image_refs.safetensors"))
total = sum(os.path.getsize(os.path.join(IMG, f)) for f in os.listdir(IMG))
print(f"wrote {len(refs)} references ({os.path.getsize(os.path.join(OUT, 'image_refs.safetensors')) // 1024} KB) "
      f"and {len(os.listdir(IMG))} input files ({total // 1024} KB)")
