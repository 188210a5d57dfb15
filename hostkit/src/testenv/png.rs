//! Just enough of a PNG reader for tests that look at Chromium's screenshots.

use std::path::Path;

/// Just enough PNG (8-bit RGB/RGBA, not interlaced: what Chromium writes) to read pixels back.
pub struct Png {
    pub width: usize,
    pub height: usize,
    bpp: usize,
    pixels: Vec<u8>,
}

impl Png {
    pub fn read(path: &Path) -> Png {
        use std::io::Read;
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
        let (mut pos, mut idat, mut ihdr) = (8, Vec::new(), Vec::new());
        while pos + 8 <= data.len() {
            let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &data[pos + 4..pos + 8];
            let body = &data[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => ihdr = body.to_vec(),
                b"IDAT" => idat.extend_from_slice(body),
                _ => {}
            }
            pos += 12 + len;
        }
        let width = u32::from_be_bytes(ihdr[0..4].try_into().unwrap()) as usize;
        let height = u32::from_be_bytes(ihdr[4..8].try_into().unwrap()) as usize;
        assert_eq!((ihdr[8], ihdr[12]), (8, 0), "8-bit, not interlaced");
        let bpp = match ihdr[9] {
            2 => 3,
            6 => 4,
            t => panic!("PNG colour type {t}"),
        };
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
        let stride = width * bpp;
        let mut pixels = vec![0u8; stride * height];
        for y in 0..height {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= bpp { pixels[y * stride + x - bpp] } else { 0 } as i16;
                let b = if y > 0 { pixels[(y - 1) * stride + x] } else { 0 } as i16;
                let c = if x >= bpp && y > 0 { pixels[(y - 1) * stride + x - bpp] } else { 0 } as i16;
                let pred = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => {
                        let p = a + b - c;
                        let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("PNG filter {f}"),
                };
                pixels[y * stride + x] = (line[x] as i16 + pred) as u8;
            }
        }
        Png { width, height, bpp, pixels }
    }

    /// Mean of R, G and B at (x, y).
    pub fn luma(&self, x: usize, y: usize) -> u32 {
        let i = (y * self.width + x) * self.bpp;
        self.pixels[i..i + 3].iter().map(|&v| u32::from(v)).sum::<u32>() / 3
    }

    /// How many distinct lumas the picture holds: 1 for a blank one.
    pub fn lumas(&self) -> usize {
        let mut seen = [false; 256];
        for y in 0..self.height {
            for x in 0..self.width {
                seen[self.luma(x, y) as usize] = true;
            }
        }
        seen.iter().filter(|s| **s).count()
    }
}
