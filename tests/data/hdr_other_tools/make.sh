#!/usr/bin/env bash
# Remakes the committed test files in this folder: small HDR environment maps written by tools that are NOT ours,
# read back by tests/test_hdr_other_tools.py through models/lighting/files.py.
#
#   source.pfm               the image every file below was made from: a 64x32 equirect, rows fading from 1e-3
#                            (bottom) to 1 (top) times a different cosine tint per channel (0.2..1), plus a bright
#                            spot of about 50 in the upper right, so values span 2e-4..50 and flipped rows, mirrored
#                            columns or swapped channels all show.  Written by the python3 step below (standard
#                            library only, deterministic).
#   oiiotool.hdr             Radiance RGBE written by OpenImageIO's oiiotool
#   imagemagick.hdr          Radiance RGBE written by ImageMagick's convert (the HDRI build: a Q16 non-HDRI build
#                            clips everything above 1.0, so it is refused)
#   pfstools.hdr             Radiance RGBE written by pfstools (pfsin source.pfm | pfsout X.hdr)
#   *.hdr.oiio.exr           each .hdr above as OpenImageIO decodes it, stored losslessly as float32 zip EXR
#                            (OpenImageIO 2.4 writes no float PFM, and its FITS puts the data a row late), so the
#                            test compares with an independent RGBE decoder without the tools installed
#   maketx_tiled_mip.exr     OpenEXR, tiled 16x16 and MIP-mapped (7 levels, 64x32 .. 1x1), half, zip, by
#                            OpenImageIO's maketx.  Not --envlatl: that also rewrites the top level (averages each
#                            pole row, blends the seam columns), and the test wants the written image back.
#   oiiotool_rgba.exr        OpenEXR, scanline, half, piz, 4 channels R G B A (alpha varies across the image)
#
# The committed files were made on Debian 12 with
#   OpenImageIO (oiiotool, maketx) 2.4.7.1 (openimageio-tools 2.4.7.1+dfsg-2)
#   ImageMagick 6.9.11-60 Q16 HDRI (imagemagick-6.q16hdri 8:6.9.11.60+dfsg-1.6+deb12u16)
#   pfstools 2.2.0 (pfstools 2.2.0-5+b1)
# Those tools are needed only to remake these files, never to run the tests; to install them (Debian):
#   apt-get install openimageio-tools imagemagick-6.q16hdri pfstools
#
# Usage: tests/data/hdr_other_tools/make.sh      (writes into the folder this script is in)
# Reruns give byte-identical .pfm and .hdr files; the .exr files differ only in OpenImageIO's DateTime attribute.
set -euo pipefail
cd "$(dirname "$0")"

# ImageMagick: IM7's `magick`, else Debian's HDRI build of IM6; CONVERT=... overrides.
if [ -z "${CONVERT:-}" ]; then
    if command -v magick >/dev/null; then CONVERT=magick
    elif command -v convert-im6.q16hdri >/dev/null; then CONVERT=convert-im6.q16hdri
    else CONVERT=convert
    fi
fi
for tool in python3 oiiotool maketx "$CONVERT" pfsin pfsout; do
    command -v "$tool" >/dev/null || { echo "make.sh: $tool not found (see the top of this script)" >&2; exit 1; }
done
"$CONVERT" -version | grep -q HDRI || { echo "make.sh: $CONVERT is not an HDRI build of ImageMagick" >&2; exit 1; }

trap 'rm -f alpha.tmp.pfm' EXIT  # made here, not in /tmp, so no random path lands in the EXR's metadata

# The source image (source.pfm, RGB) and an alpha channel for the RGBA EXR (alpha.tmp.pfm, grey, not kept).
python3 - alpha.tmp.pfm <<'PY'
import math, struct, sys

W, H = 64, 32

def rgb(x, y):
    level = 10.0 ** (-3.0 + 3.0 * (H - 1 - y) / (H - 1))  # 1e-3 at the bottom row, 1 at the top row
    tint = [0.6 + 0.4 * math.cos(2 * math.pi * x / W + phase) for phase in (0.0, 2.1, 4.2)]
    spot = 50.0 * math.exp(-((x - 48) ** 2 + (y - 8) ** 2) / 4.0)  # the sun: upper right
    return [level * t + spot * s for t, s in zip(tint, (1.0, 0.9, 0.7))]

def write_pfm(path, channels, pixel):
    # PFM: text header, then little-endian float32 rows from the BOTTOM row up.
    with open(path, "wb") as f:
        f.write(b"%s\n%d %d\n-1.0\n" % (b"PF" if channels == 3 else b"Pf", W, H))
        for y in reversed(range(H)):
            for x in range(W):
                f.write(struct.pack("<%df" % channels, *pixel(x, y)))

write_pfm("source.pfm", 3, rgb)
write_pfm(sys.argv[1], 1, lambda x, y: [(x + 2 * y + 1) / (W + 2 * H)])
PY

oiiotool source.pfm -o oiiotool.hdr
"$CONVERT" source.pfm imagemagick.hdr
pfsin source.pfm | pfsout pfstools.hdr
for f in oiiotool.hdr imagemagick.hdr pfstools.hdr; do
    oiiotool "$f" -d float --compression zip -o "$f.oiio.exr"
done

maketx --tile 16 16 -d half --compression zip source.pfm -o maketx_tiled_mip.exr
oiiotool source.pfm alpha.tmp.pfm --chappend --chnames R,G,B,A -d half --compression piz -o oiiotool_rgba.exr

rm -f alpha.tmp.pfm
ls -l
