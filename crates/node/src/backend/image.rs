//! Images for the built-in image models: PNG and JPEG decoded to 8-bit RGB (pure Rust decoders, with
//! limits), PNG written, and the few operations OCR's pre-processing needs (bilinear resize, padding,
//! the crop of a rotated rectangle), written to match OpenCV's conventions (pixel centres at +0.5,
//! edges replicated).

/// An 8-bit RGB image, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// The most pixels an image may have once decoded (a small file can claim a huge picture).
pub const MAX_PIXELS: usize = 40_000_000;

/// Why an image cannot be read: said to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("is not a PNG or JPEG image")]
    UnknownFormat,
    #[error("cannot be decoded: {0}")]
    Corrupt(String),
    #[error("is {width}x{height} pixels, more than the {MAX_PIXELS} this model reads")]
    TooLarge { width: usize, height: usize },
    #[error("has no pixels")]
    Empty,
}

impl Rgb {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }

    /// Decodes a PNG or JPEG file (told apart by their signatures). Transparency is composited
    /// onto white, as a page behind the text would be; 16-bit samples are cut to 8.
    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            decode_png(bytes)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            decode_jpeg(bytes)
        } else {
            Err(ImageError::UnknownFormat)
        }
    }

    /// The image as a PNG file (8-bit RGB; the same pixels always give the same bytes).
    pub fn encode_png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let (w, h) = (
            u32::try_from(self.width).map_err(|e| e.to_string())?,
            u32::try_from(self.height).map_err(|e| e.to_string())?,
        );
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&self.data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Resized to `width` x `height` by bilinear interpolation (OpenCV's `INTER_LINEAR`).
    pub fn resize(&self, width: usize, height: usize) -> Self {
        let mut out = Self::new(width.max(1), height.max(1));
        let sx = self.width as f32 / out.width as f32;
        let sy = self.height as f32 / out.height as f32;
        for y in 0..out.height {
            let fy = ((y as f32 + 0.5) * sy - 0.5).max(0.0);
            for x in 0..out.width {
                let fx = ((x as f32 + 0.5) * sx - 0.5).max(0.0);
                let p = self.sample(fx, fy);
                let i = (y * out.width + x) * 3;
                out.data[i..i + 3].copy_from_slice(&p);
            }
        }
        out
    }

    /// The bilinear sample at (`x`, `y`) in pixel-index coordinates, edges replicated.
    fn sample(&self, x: f32, y: f32) -> [u8; 3] {
        let clamp = |v: f32, max: usize| v.clamp(0.0, (max - 1) as f32);
        let (x, y) = (clamp(x, self.width), clamp(y, self.height));
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (ax, ay) = (x - x0 as f32, y - y0 as f32);
        let (p00, p10, p01, p11) = (
            self.pixel(x0, y0),
            self.pixel(x1, y0),
            self.pixel(x0, y1),
            self.pixel(x1, y1),
        );
        let mut out = [0u8; 3];
        for c in 0..3 {
            let top = f32::from(p00[c]) * (1.0 - ax) + f32::from(p10[c]) * ax;
            let bottom = f32::from(p01[c]) * (1.0 - ax) + f32::from(p11[c]) * ax;
            out[c] = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
        }
        out
    }

    /// With `rows` black rows added above and below.
    pub fn pad_vertically(&self, rows: usize) -> Self {
        let mut out = Self::new(self.width, self.height + 2 * rows);
        let start = rows * self.width * 3;
        out.data[start..start + self.data.len()].copy_from_slice(&self.data);
        out
    }

    /// The upright crop of the quadrilateral `quad` (top-left, top-right, bottom-right,
    /// bottom-left; a rotated rectangle), as wide and high as its longer opposite sides, sampled
    /// bilinearly with edges replicated. A crop at least 1.5 times as high as wide is turned a
    /// quarter counter-clockwise (vertical text), as PP-OCR does.
    pub fn crop_quad(&self, quad: &[[f32; 2]; 4]) -> Self {
        let dist = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        let width = dist(quad[0], quad[1]).max(dist(quad[2], quad[3])) as usize;
        let height = dist(quad[0], quad[3]).max(dist(quad[1], quad[2])) as usize;
        let (width, height) = (width.max(1), height.max(1));
        let mut out = Self::new(width, height);
        // The affine map from the crop's corners (0,0), (w,0), (0,h) to the quad's.
        let [tl, tr, _, bl] = *quad;
        let ux = [(tr[0] - tl[0]) / width as f32, (tr[1] - tl[1]) / width as f32];
        let uy = [(bl[0] - tl[0]) / height as f32, (bl[1] - tl[1]) / height as f32];
        for y in 0..height {
            for x in 0..width {
                let (fx, fy) = (x as f32, y as f32);
                let sx = tl[0] + ux[0] * fx + uy[0] * fy;
                let sy = tl[1] + ux[1] * fx + uy[1] * fy;
                let p = self.sample(sx, sy);
                let i = (y * width + x) * 3;
                out.data[i..i + 3].copy_from_slice(&p);
            }
        }
        if height as f32 / width as f32 >= 1.5 {
            out.rotate_counter_clockwise()
        } else {
            out
        }
    }

    fn rotate_counter_clockwise(&self) -> Self {
        let mut out = Self::new(self.height, self.width);
        for y in 0..self.height {
            for x in 0..self.width {
                let p = self.pixel(x, y);
                let (nx, ny) = (y, self.width - 1 - x);
                let i = (ny * out.width + nx) * 3;
                out.data[i..i + 3].copy_from_slice(&p);
            }
        }
        out
    }

    /// The image as a `1 x 3 x H x W` float tensor in OpenCV's BGR channel order (what PP-OCR was
    /// trained on), each channel `(v / 255 - mean) / std`.
    pub fn to_bgr_tensor(&self, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
        let plane = self.width * self.height;
        let mut out = vec![0.0; plane * 3];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for (c, rgb_index) in [2, 1, 0].into_iter().enumerate() {
                out[c * plane + i] = (f32::from(px[rgb_index]) / 255.0 - mean[c]) / std[c];
            }
        }
        out
    }
}

fn check_size(width: usize, height: usize) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty);
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok(())
}

/// A PNG's pixels composited onto white.
fn decode_png(bytes: &[u8]) -> Result<Rgb, ImageError> {
    decode_png_with(bytes, |rgb, alpha| {
        let a = u16::from(alpha);
        rgb.map(|v| ((u16::from(v) * a + 255 * (255 - a) + 127) / 255) as u8)
    })
}

impl Rgb {
    /// A PNG's alpha channel, as grey (255 where opaque; an image without alpha is all 255): the
    /// mask of an image edit, whose transparent pixels mark what to redraw.
    pub fn decode_alpha(bytes: &[u8]) -> Result<Self, ImageError> {
        if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(ImageError::UnknownFormat);
        }
        decode_png_with(bytes, |_, alpha| [alpha; 3])
    }
}

/// A PNG's pixels, each made RGB by `pixel` from its colour and alpha.
fn decode_png_with(bytes: &[u8], pixel: impl Fn([u8; 3], u8) -> [u8; 3]) -> Result<Rgb, ImageError> {
    let corrupt = |e: png::DecodingError| ImageError::Corrupt(e.to_string());
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_PIXELS * 8,
        },
    );
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_size(width, height)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Corrupt("its size overflows".to_owned()))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(ImageError::Corrupt("a palette was not expanded".to_owned())),
    };
    let mut out = Rgb::new(width, height);
    for (i, px) in buf[..frame.buffer_size()]
        .chunks_exact(channels)
        .enumerate()
        .take(width * height)
    {
        let (rgb, alpha) = match channels {
            1 => ([px[0]; 3], 255),
            2 => ([px[0]; 3], px[1]),
            3 => ([px[0], px[1], px[2]], 255),
            _ => ([px[0], px[1], px[2]], px[3]),
        };
        out.data[i * 3..i * 3 + 3].copy_from_slice(&pixel(rgb, alpha));
    }
    Ok(out)
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb, ImageError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(50_000)
        .set_max_height(50_000);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| ImageError::Corrupt("no dimensions".to_owned()))?;
    check_size(width, height)?;
    let data = decoder.decode().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    if data.len() != width * height * 3 {
        return Err(ImageError::Corrupt("short pixel data".to_owned()));
    }
    Ok(Rgb { width, height, data })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn png_of_every_colour_type_decodes_to_rgb_with_alpha_on_white() {
        let gray = Rgb::decode(&png(2, 1, png::ColorType::Grayscale, &[0, 200])).unwrap();
        assert_eq!(gray.data, vec![0, 0, 0, 200, 200, 200]);
        let rgba = Rgb::decode(&png(2, 1, png::ColorType::Rgba, &[10, 20, 30, 255, 0, 0, 0, 0])).unwrap();
        assert_eq!(rgba.data, vec![10, 20, 30, 255, 255, 255]);
        let half = Rgb::decode(&png(1, 1, png::ColorType::GrayscaleAlpha, &[0, 128])).unwrap();
        assert_eq!(half.data, vec![127, 127, 127]);
        let alpha =
            Rgb::decode_alpha(&png(2, 1, png::ColorType::Rgba, &[10, 20, 30, 255, 0, 0, 0, 0])).unwrap();
        assert_eq!(alpha.data, vec![255, 255, 255, 0, 0, 0]);
        let opaque = Rgb::decode_alpha(&png(1, 1, png::ColorType::Grayscale, &[9])).unwrap();
        assert_eq!(opaque.data, vec![255; 3]);
    }

    #[test]
    fn a_written_png_reads_back_the_same() {
        let mut img = Rgb::new(3, 2);
        img.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i * 13) as u8);
        assert_eq!(Rgb::decode(&img.encode_png().unwrap()).unwrap(), img);
    }

    #[test]
    fn what_is_not_an_image_is_refused_by_name() {
        assert_eq!(Rgb::decode(b"GIF89a..."), Err(ImageError::UnknownFormat));
        assert!(matches!(
            Rgb::decode(b"\x89PNG\r\n\x1a\nbroken"),
            Err(ImageError::Corrupt(_))
        ));
        assert!(matches!(
            Rgb::decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Err(ImageError::Corrupt(_))
        ));
        // A header claiming 100,000 x 100,000 pixels is refused before any pixel is allocated.
        let mut huge = png(1, 1, png::ColorType::Grayscale, &[0]);
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(Rgb::decode(&huge).is_err());
    }

    #[test]
    fn resizing_keeps_flat_colour_and_interpolates_like_opencv() {
        let mut img = Rgb::new(2, 1);
        img.data = vec![0, 0, 0, 200, 200, 200];
        // OpenCV's INTER_LINEAR, 2 -> 4 pixels: 0, 50, 150, 200.
        let wide = img.resize(4, 1);
        assert_eq!(
            wide.data.chunks(3).map(|p| p[0]).collect::<Vec<_>>(),
            vec![0, 50, 150, 200]
        );
        assert_eq!(img.resize(1, 3).height, 3);
    }

    #[test]
    fn a_tall_crop_is_turned_and_a_tensor_is_bgr() {
        let mut img = Rgb::new(4, 8);
        img.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 251) as u8);
        let crop = img.crop_quad(&[[0.0, 0.0], [2.0, 0.0], [2.0, 6.0], [0.0, 6.0]]);
        assert_eq!((crop.width, crop.height), (6, 2));
        let mut px = Rgb::new(1, 1);
        px.data = vec![255, 0, 51];
        assert_eq!(px.to_bgr_tensor([0.0; 3], [1.0; 3]), vec![0.2, 0.0, 1.0]);
    }
}
