//! Video files for the built-in video model: RGB frames encoded as H.264 (every frame an intra
//! frame of lossless PCM macroblocks, by `less-avc`, pure Rust) and muxed here into an MP4 file
//! (ISO/IEC 14496-12 and -15): `ftyp`, one `mdat` chunk holding the frames as length-prefixed NAL
//! units, and a `moov` with one video track (`avc1` with its `avcC` from the stream's SPS and PPS).
//! Every frame is a sync sample, so there is no `stss`. The same frames give the same bytes.
//!
//! PCM frames are large (1.5 bytes a pixel), which is why the built-in model renders small sizes.

use less_avc::ycbcr_image::{DataPlane, Planes, YCbCrImage};
use less_avc::BitDepth;

use super::image::Rgb;

/// An MP4 writer's failure (a frame of another size, an encoder error).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot write the video: {0}")]
pub struct Mp4Error(String);

/// Frames in, an MP4 file out: frames are encoded as they are pushed.
pub struct Mp4Writer {
    width: usize,
    height: usize,
    fps: u32,
    encoder: Option<less_avc::LessEncoder>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// Each frame's sample: its NAL units, each prefixed by its length (4 bytes, big-endian).
    samples: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Mp4Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp4Writer")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("frames", &self.samples.len())
            .finish_non_exhaustive()
    }
}

impl Mp4Writer {
    /// A writer of `width` x `height` frames (each even: 4:2:0 chroma) at `fps`.
    pub fn new(width: usize, height: usize, fps: u32) -> Result<Self, Mp4Error> {
        if width == 0
            || height == 0
            || !width.is_multiple_of(2)
            || !height.is_multiple_of(2)
            || width > 4096
            || height > 4096
        {
            return Err(Mp4Error(format!(
                "{width}x{height} is not an even size up to 4096"
            )));
        }
        if fps == 0 {
            return Err(Mp4Error("the frame rate must be positive".to_owned()));
        }
        Ok(Self {
            width,
            height,
            fps,
            encoder: None,
            sps: Vec::new(),
            pps: Vec::new(),
            samples: Vec::new(),
        })
    }

    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// Encodes one frame.
    pub fn push(&mut self, frame: &Rgb) -> Result<(), Mp4Error> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(Mp4Error(format!(
                "a frame of {}x{} in a {}x{} video",
                frame.width, frame.height, self.width, self.height
            )));
        }
        let planes = Yuv420::of(frame);
        let image = planes.image();
        let encoded = |e: less_avc::Error| Mp4Error(format!("H.264: {e:?}"));
        let nal = match &mut self.encoder {
            Some(encoder) => encoder.encode(&image).map_err(encoded)?,
            None => {
                let (initial, encoder) = less_avc::LessEncoder::new(&image).map_err(encoded)?;
                self.sps = initial.sps.to_nal_unit();
                self.pps = initial.pps.to_nal_unit();
                self.encoder = Some(encoder);
                initial.frame
            }
        };
        let unit = nal.to_nal_unit();
        let mut sample = Vec::with_capacity(unit.len() + 4);
        sample.extend_from_slice(
            &u32::try_from(unit.len())
                .map_err(|e| Mp4Error(e.to_string()))?
                .to_be_bytes(),
        );
        sample.extend_from_slice(&unit);
        self.samples.push(sample);
        Ok(())
    }

    /// The MP4 file of the frames pushed (at least one).
    pub fn finish(self) -> Result<Vec<u8>, Mp4Error> {
        if self.samples.is_empty() || self.sps.len() < 4 {
            return Err(Mp4Error("a video needs at least one frame".to_owned()));
        }
        let brands: [&[u8]; 3] = [b"isom", &0x200u32.to_be_bytes(), b"isomiso2avc1mp41"];
        let ftyp = boxed(b"ftyp", &brands.concat());
        let data_len: usize = self.samples.iter().map(Vec::len).sum();
        // The data starts after ftyp and mdat's 8-byte header.
        let data_offset = u32::try_from(ftyp.len() + 8).map_err(|e| Mp4Error(e.to_string()))?;
        let moov = self.moov(data_offset)?;
        let mut out = Vec::with_capacity(ftyp.len() + 8 + data_len + moov.len());
        out.extend_from_slice(&ftyp);
        out.extend_from_slice(
            &u32::try_from(data_len + 8)
                .map_err(|e| Mp4Error(e.to_string()))?
                .to_be_bytes(),
        );
        out.extend_from_slice(b"mdat");
        for sample in &self.samples {
            out.extend_from_slice(sample);
        }
        out.extend_from_slice(&moov);
        Ok(out)
    }

    fn moov(&self, data_offset: u32) -> Result<Vec<u8>, Mp4Error> {
        let frames = u32::try_from(self.samples.len()).map_err(|e| Mp4Error(e.to_string()))?;
        // Durations in milliseconds for the movie, in frames (timescale = fps) for the media.
        let duration_ms = u64::from(frames) * 1000 / u64::from(self.fps);
        let duration_ms = u32::try_from(duration_ms).map_err(|e| Mp4Error(e.to_string()))?;
        let (w, h) = (self.width as u32, self.height as u32);
        let matrix: Vec<u8> = [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let be32 = |v: u32| v.to_be_bytes().to_vec();
        let be16 = |v: u16| v.to_be_bytes().to_vec();
        let mvhd = full(
            b"mvhd",
            0,
            0,
            &[
                be32(0),
                be32(0),
                be32(1000),
                be32(duration_ms),
                be32(0x0001_0000),
                be16(0x0100),
                vec![0; 10],
                matrix.clone(),
                vec![0; 24],
                be32(2),
            ]
            .concat(),
        );
        let tkhd = full(
            b"tkhd",
            0,
            3,
            &[
                be32(0),
                be32(0),
                be32(1),
                be32(0),
                be32(duration_ms),
                vec![0; 8],
                be16(0),
                be16(0),
                be16(0),
                be16(0),
                matrix,
                be32(w << 16),
                be32(h << 16),
            ]
            .concat(),
        );
        let mdhd = full(
            b"mdhd",
            0,
            0,
            &[
                be32(0),
                be32(0),
                be32(self.fps),
                be32(frames),
                be16(0x55C4),
                be16(0),
            ]
            .concat(),
        );
        let hdlr = full(
            b"hdlr",
            0,
            0,
            &[be32(0), b"vide".to_vec(), vec![0; 12], b"VideoHandler\0".to_vec()].concat(),
        );
        let vmhd = full(b"vmhd", 0, 1, &[0u8; 8]);
        let dref = full(b"dref", 0, 0, &[be32(1), full(b"url ", 0, 1, &[])].concat());
        let dinf = boxed(b"dinf", &dref);
        let stbl = boxed(
            b"stbl",
            &[
                full(b"stsd", 0, 0, &[be32(1), self.avc1()?].concat()),
                full(b"stts", 0, 0, &[be32(1), be32(frames), be32(1)].concat()),
                full(b"stsc", 0, 0, &[be32(1), be32(1), be32(frames), be32(1)].concat()),
                full(
                    b"stsz",
                    0,
                    0,
                    &[
                        be32(0),
                        be32(frames),
                        self.samples
                            .iter()
                            .flat_map(|s| (s.len() as u32).to_be_bytes())
                            .collect(),
                    ]
                    .concat(),
                ),
                full(b"stco", 0, 0, &[be32(1), be32(data_offset)].concat()),
            ]
            .concat(),
        );
        let minf = boxed(b"minf", &[vmhd, dinf, stbl].concat());
        let mdia = boxed(b"mdia", &[mdhd, hdlr, minf].concat());
        let trak = boxed(b"trak", &[tkhd, mdia].concat());
        Ok(boxed(b"moov", &[mvhd, trak].concat()))
    }

    /// The sample entry: `avc1` with its decoder configuration (`avcC`).
    fn avc1(&self) -> Result<Vec<u8>, Mp4Error> {
        let len16 = |b: &[u8]| {
            u16::try_from(b.len())
                .map(u16::to_be_bytes)
                .map_err(|e| Mp4Error(e.to_string()))
        };
        // The SPS after its NAL header byte: profile_idc, constraint flags, level_idc.
        let (profile, compat, level) = (self.sps[1], self.sps[2], self.sps[3]);
        let mut avcc = vec![1, profile, compat, level, 0xFF, 0xE1];
        avcc.extend_from_slice(&len16(&self.sps)?);
        avcc.extend_from_slice(&self.sps);
        avcc.push(1);
        avcc.extend_from_slice(&len16(&self.pps)?);
        avcc.extend_from_slice(&self.pps);
        if matches!(profile, 100 | 110 | 122 | 144) {
            // 4:2:0, 8-bit luma and chroma, no SPS extensions.
            avcc.extend_from_slice(&[0xFC | 1, 0xF8, 0xF8, 0]);
        }
        let mut compressor = [0u8; 32];
        let name = b"stacknet less-avc";
        compressor[0] = name.len() as u8;
        compressor[1..=name.len()].copy_from_slice(name);
        let body = [
            vec![0; 6],
            1u16.to_be_bytes().to_vec(),
            vec![0; 16],
            (self.width as u16).to_be_bytes().to_vec(),
            (self.height as u16).to_be_bytes().to_vec(),
            0x0048_0000u32.to_be_bytes().to_vec(),
            0x0048_0000u32.to_be_bytes().to_vec(),
            vec![0; 4],
            1u16.to_be_bytes().to_vec(),
            compressor.to_vec(),
            0x0018u16.to_be_bytes().to_vec(),
            0xFFFFu16.to_be_bytes().to_vec(),
            boxed(b"avcC", &avcc),
        ]
        .concat();
        Ok(boxed(b"avc1", &body))
    }
}

/// An ISO box: size, type, body.
fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// A full box: a box whose body starts with a version byte and 24 bits of flags.
fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut head = flags.to_be_bytes();
    head[0] = version;
    boxed(kind, &[head.as_slice(), body].concat())
}

/// A frame as 8-bit 4:2:0 Y'CbCr (BT.601, limited range), each plane padded to whole macroblocks
/// (16 luma rows and columns) as the encoder wants.
struct Yuv420 {
    width: usize,
    height: usize,
    y: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
    luma_stride: usize,
    chroma_stride: usize,
}

impl Yuv420 {
    fn of(frame: &Rgb) -> Self {
        let (w, h) = (frame.width, frame.height);
        let luma_stride = w.div_ceil(16) * 16;
        let rows = h.div_ceil(16) * 16;
        let chroma_stride = luma_stride / 2;
        let mut y = vec![16u8; luma_stride * rows];
        let mut cb = vec![128u8; chroma_stride * rows / 2];
        let mut cr = vec![128u8; chroma_stride * rows / 2];
        let rgb = |x: usize, yy: usize| {
            let p = frame.pixel(x, yy);
            [0, 1, 2].map(|c| f32::from(p[c]) / 255.0)
        };
        for row in 0..h {
            for x in 0..w {
                let [r, g, b] = rgb(x, row);
                y[row * luma_stride + x] = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b).round() as u8;
            }
        }
        for row in 0..h / 2 {
            for x in 0..w / 2 {
                let mut sum = [0f32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = rgb(2 * x + dx, 2 * row + dy);
                    (0..3).for_each(|c| sum[c] += p[c] / 4.0);
                }
                let [r, g, b] = sum;
                cb[row * chroma_stride + x] = (128.0 - 37.797 * r - 74.203 * g + 112.0 * b).round() as u8;
                cr[row * chroma_stride + x] = (128.0 + 112.0 * r - 93.786 * g - 18.214 * b).round() as u8;
            }
        }
        Self {
            width: w,
            height: h,
            y,
            cb,
            cr,
            luma_stride,
            chroma_stride,
        }
    }

    fn image(&self) -> YCbCrImage<'_> {
        fn plane(data: &[u8], stride: usize) -> DataPlane<'_> {
            DataPlane {
                data,
                stride,
                bit_depth: BitDepth::Depth8,
            }
        }
        YCbCrImage {
            planes: Planes::YCbCr((
                plane(&self.y, self.luma_stride),
                plane(&self.cb, self.chroma_stride),
                plane(&self.cr, self.chroma_stride),
            )),
            width: self.width as u32,
            height: self.height as u32,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use stacknet_api::output::mp4_description;

    fn frame(w: usize, h: usize, shade: u8) -> Rgb {
        let mut f = Rgb::new(w, h);
        for (i, px) in f.data.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&[shade, (i % 251) as u8, 255 - shade]);
        }
        f
    }

    #[test]
    fn frames_become_an_mp4_that_describes_itself() {
        let mut writer = Mp4Writer::new(48, 32, 8).unwrap();
        for i in 0..12 {
            writer.push(&frame(48, 32, i * 20)).unwrap();
        }
        assert!(writer.push(&frame(32, 32, 0)).is_err(), "another size");
        let file = writer.finish().unwrap();
        assert_eq!(&file[4..8], b"ftyp");
        assert_eq!(mp4_description(&file), Some((48, 32, 12, 1500)));
        let mut again = Mp4Writer::new(48, 32, 8).unwrap();
        for i in 0..12 {
            again.push(&frame(48, 32, i * 20)).unwrap();
        }
        assert_eq!(again.finish().unwrap(), file, "the same frames, the same bytes");
        assert!(Mp4Writer::new(47, 32, 8).is_err());
        assert!(Mp4Writer::new(48, 32, 8).unwrap().finish().is_err());
        assert_eq!(mp4_description(b"not a video"), None);
    }
}
