//! A direct reader for plain PCM / IEEE-float WAV files, the format long recordings are
//! usually extracted to.
//!
//! symphonia decodes WAV packet by packet through its generic sample-conversion layer, which
//! made it about an eighth of `moi-detect`'s time on a 10-minute file, on one core. Here the
//! data chunk is read with positioned reads in parallel blocks and converted with one
//! monomorphised loop per sample format. The conversions are symphonia's own (`i16 / 32768`,
//! `u8 / 128 - 1`, ...), so both paths give bit-identical samples (tested). Anything unusual
//! (RF64, compressed formats, a data chunk running past the end of the file, padding bits)
//! is left to symphonia and its error reporting.

use std::fs::File;
use std::io;
use std::path::Path;

use rayon::prelude::*;

use crate::decode::DecodedAudio;
use crate::mem;
use crate::AudioError;

/// Frames converted by one parallel task (256 KiB of 16-bit stereo).
const FRAMES_PER_TASK: usize = 1 << 16;

/// Sample encodings of the data chunk this reader handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleKind {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl SampleKind {
    fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::I16 => 2,
            Self::I24 => 3,
            Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

/// Where the samples are and how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WavLayout {
    kind: SampleKind,
    channels: usize,
    sample_rate: u32,
    data_offset: u64,
    n_frames: usize,
}

impl WavLayout {
    fn block_align(&self) -> usize {
        self.kind.bytes() * self.channels
    }
}

/// Reads exactly `buf.len()` bytes at `offset` without moving a shared cursor.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset` without moving a shared cursor.
#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Other platforms always go through symphonia.
#[cfg(not(any(unix, windows)))]
fn read_at(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The tail shared by the KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT GUIDs after their format tag.
const SUBTYPE_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// Parses a `fmt ` chunk; `None` for anything but integer PCM or IEEE float without padding bits.
fn parse_fmt(b: &[u8]) -> Option<(SampleKind, usize, u32)> {
    if b.len() < 16 {
        return None;
    }
    let mut tag = u16_at(b, 0);
    let channels = usize::from(u16_at(b, 2));
    let sample_rate = u32_at(b, 4);
    let block_align = usize::from(u16_at(b, 12));
    let bits = u16_at(b, 14);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, channel mask, sub-format GUID.
        if b.len() < 40 || u16_at(b, 16) < 22 || u16_at(b, 18) != bits {
            return None;
        }
        if b[26..40] != SUBTYPE_GUID_TAIL {
            return None;
        }
        tag = u16_at(b, 24);
    }
    let kind = match (tag, bits) {
        (1, 8) => SampleKind::U8,
        (1, 16) => SampleKind::I16,
        (1, 24) => SampleKind::I24,
        (1, 32) => SampleKind::I32,
        (3, 32) => SampleKind::F32,
        (3, 64) => SampleKind::F64,
        _ => return None,
    };
    if channels == 0 || sample_rate == 0 || block_align != channels * kind.bytes() {
        return None;
    }
    Some((kind, channels, sample_rate))
}

/// Finds the format and data chunks. `Ok(None)`: not a WAV file this reader handles.
fn probe(file: &File, file_len: u64) -> io::Result<Option<WavLayout>> {
    let mut head = [0u8; 12];
    if file_len < 12 || read_at(file, &mut head, 0).is_err() {
        return Ok(None);
    }
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Ok(None);
    }
    let mut pos = 12u64;
    let mut format = None;
    while pos + 8 <= file_len {
        let mut chunk = [0u8; 8];
        read_at(file, &mut chunk, pos)?;
        let size = u64::from(u32_at(&chunk, 4));
        let body = pos + 8;
        match &chunk[0..4] {
            b"fmt " => {
                let len = size.min(64) as usize;
                if body + len as u64 > file_len {
                    return Ok(None);
                }
                let mut b = vec![0u8; len];
                read_at(file, &mut b, body)?;
                format = parse_fmt(&b);
                if format.is_none() {
                    return Ok(None);
                }
            }
            b"data" => {
                let Some((kind, channels, sample_rate)) = format else {
                    return Ok(None);
                };
                let block = (kind.bytes() * channels) as u64;
                if size == 0 || size % block != 0 || body + size > file_len {
                    return Ok(None);
                }
                return Ok(Some(WavLayout {
                    kind,
                    channels,
                    sample_rate,
                    data_offset: body,
                    n_frames: (size / block) as usize,
                }));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos = body + size + (size & 1);
    }
    Ok(None)
}

/// Converts interleaved frames to one sample per frame: the channel mean, accumulated in
/// channel order from 0.0 exactly as [`DecodedAudio::mono`] does, or the channel itself.
fn mix_frames<const W: usize>(
    bytes: &[u8],
    channels: usize,
    out: &mut [f32],
    conv: fn([u8; W]) -> f32,
) {
    if channels == 1 {
        for (o, s) in out.iter_mut().zip(bytes.chunks_exact(W)) {
            *o = conv(s.try_into().unwrap_or([0; W]));
        }
        return;
    }
    let n = channels as f32;
    for (o, frame) in out.iter_mut().zip(bytes.chunks_exact(W * channels)) {
        let mut acc = 0.0f32;
        for s in frame.chunks_exact(W) {
            acc += conv(s.try_into().unwrap_or([0; W]));
        }
        *o = acc / n;
    }
}

fn conv_u8(b: [u8; 1]) -> f32 {
    f32::from(b[0]) / 128.0 - 1.0
}
fn conv_i16(b: [u8; 2]) -> f32 {
    f32::from(i16::from_le_bytes(b)) / 32_768.0
}
fn conv_i24(b: [u8; 3]) -> f32 {
    // Sign-extend through the top byte of an i32.
    (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
}
fn conv_i32(b: [u8; 4]) -> f32 {
    (f64::from(i32::from_le_bytes(b)) / 2_147_483_648.0) as f32
}
fn conv_f32(b: [u8; 4]) -> f32 {
    f32::from_le_bytes(b)
}
fn conv_f64(b: [u8; 8]) -> f32 {
    f64::from_le_bytes(b) as f32
}

/// Reads the data chunk in parallel blocks; `mix` turns the bytes of `k` frames into `k`
/// values (`per_frame` values per frame) of `out`.
fn read_blocks(
    file: &File,
    layout: &WavLayout,
    out: &mut [f32],
    per_frame: usize,
    mix: &Converter,
) -> io::Result<()> {
    let block = layout.block_align();
    out.par_chunks_mut(FRAMES_PER_TASK * per_frame)
        .enumerate()
        .try_for_each_init(Vec::new, |buf: &mut Vec<u8>, (task, dst)| {
            let frames = dst.len() / per_frame;
            buf.resize(frames * block, 0);
            let offset = layout.data_offset + (task * FRAMES_PER_TASK * block) as u64;
            read_at(file, buf, offset)?;
            mix(buf, dst);
            Ok(())
        })
}

/// Turns the interleaved bytes of whole frames into samples.
type Converter = dyn Fn(&[u8], &mut [f32]) + Sync;

/// Converter of interleaved bytes for the layout's sample kind; `mono` averages channels.
fn converter(layout: &WavLayout, mono: bool) -> Box<Converter> {
    let ch = if mono { layout.channels } else { 1 };
    match layout.kind {
        SampleKind::U8 => Box::new(move |b, o| mix_frames::<1>(b, ch, o, conv_u8)),
        SampleKind::I16 => Box::new(move |b, o| mix_frames::<2>(b, ch, o, conv_i16)),
        SampleKind::I24 => Box::new(move |b, o| mix_frames::<3>(b, ch, o, conv_i24)),
        SampleKind::I32 => Box::new(move |b, o| mix_frames::<4>(b, ch, o, conv_i32)),
        SampleKind::F32 => Box::new(move |b, o| mix_frames::<4>(b, ch, o, conv_f32)),
        SampleKind::F64 => Box::new(move |b, o| mix_frames::<8>(b, ch, o, conv_f64)),
    }
}

/// Opens `path` and probes it; `Ok(None)` when symphonia should decode it instead.
fn open(path: &Path) -> Result<Option<(File, WavLayout)>, AudioError> {
    let file = File::open(path).map_err(|e| AudioError::io(path, e))?;
    let len = file.metadata().map_err(|e| AudioError::io(path, e))?.len();
    match probe(&file, len).map_err(|e| AudioError::io(path, e))? {
        Some(layout) if cfg!(any(unix, windows)) => Ok(Some((file, layout))),
        _ => Ok(None),
    }
}

/// Decodes a plain PCM/float WAV to planar channels; `Ok(None)` for any other file.
pub(crate) fn decode(path: &Path) -> Result<Option<DecodedAudio>, AudioError> {
    let Some((file, layout)) = open(path)? else {
        return Ok(None);
    };
    let ch = layout.channels;
    let mut interleaved = mem::zeroed_f32(layout.n_frames * ch);
    let conv = converter(&layout, false);
    read_blocks(&file, &layout, &mut interleaved, ch, &*conv)
        .map_err(|e| AudioError::io(path, e))?;
    let channels = if ch == 1 {
        vec![interleaved]
    } else {
        (0..ch)
            .into_par_iter()
            .map(|c| interleaved.iter().skip(c).step_by(ch).copied().collect())
            .collect()
    };
    Ok(Some(DecodedAudio {
        channels,
        sample_rate: layout.sample_rate,
    }))
}

/// Decodes a plain PCM/float WAV straight to its channel mean; `Ok(None)` for any other file.
/// The flag says whether the samples may hold NaN or infinities (float formats only).
pub(crate) fn decode_mono(path: &Path) -> Result<Option<(Vec<f32>, u32, bool)>, AudioError> {
    let Some((file, layout)) = open(path)? else {
        return Ok(None);
    };
    let mut mono = mem::zeroed_f32(layout.n_frames);
    let conv = converter(&layout, true);
    read_blocks(&file, &layout, &mut mono, 1, &*conv).map_err(|e| AudioError::io(path, e))?;
    let maybe_non_finite = matches!(layout.kind, SampleKind::F32 | SampleKind::F64);
    Ok(Some((mono, layout.sample_rate, maybe_non_finite)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV file with the given format chunk body and interleaved sample bytes, plus an
    /// odd-sized JUNK chunk before the data to exercise chunk padding.
    fn wav_bytes(fmt: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        let riff_len = 4 + (8 + fmt.len()) + (8 + 5 + 1) + (8 + data.len());
        v.extend_from_slice(&(riff_len as u32).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        v.extend_from_slice(fmt);
        v.extend_from_slice(b"JUNK");
        v.extend_from_slice(&5u32.to_le_bytes());
        v.extend_from_slice(b"abcde\0");
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn fmt_chunk(tag: u16, channels: u16, bits: u16, extensible: bool) -> Vec<u8> {
        let rate = 8000u32;
        let align = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&(if extensible { 0xFFFE } else { tag }).to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        if extensible {
            f.extend_from_slice(&22u16.to_le_bytes());
            f.extend_from_slice(&bits.to_le_bytes());
            let mask: u32 = if channels == 1 {
                0x4
            } else {
                (1 << channels) - 1
            };
            f.extend_from_slice(&mask.to_le_bytes());
            f.extend_from_slice(&tag.to_le_bytes());
            f.extend_from_slice(&SUBTYPE_GUID_TAIL);
        }
        f
    }

    /// Sample bytes covering each format's extremes and a pseudo-random body.
    fn sample_bytes(bits: u16, float: bool, n: usize) -> Vec<u8> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for i in 0..n {
            let r = next();
            match (bits, float) {
                (8, _) => out.push(if i < 3 { [0u8, 255, 128][i] } else { r as u8 }),
                (16, _) => {
                    let v = [i16::MIN, i16::MAX, 0][i % 3];
                    let v = if i < 3 { v } else { r as i16 };
                    out.extend_from_slice(&v.to_le_bytes());
                }
                (24, _) => {
                    let v = [-(1i32 << 23), (1 << 23) - 1, -1][i % 3];
                    let v = if i < 3 { v } else { (r as i32) >> 8 };
                    out.extend_from_slice(&v.to_le_bytes()[0..3]);
                }
                (32, false) => {
                    let v = if i < 3 {
                        [i32::MIN, i32::MAX, 1][i]
                    } else {
                        r as i32
                    };
                    out.extend_from_slice(&v.to_le_bytes());
                }
                (32, true) => {
                    let v = (r as i32) as f32 / 2.0e9;
                    out.extend_from_slice(&v.to_le_bytes());
                }
                (64, true) => {
                    let v = (r as i64) as f64 / 9.0e18;
                    out.extend_from_slice(&v.to_le_bytes());
                }
                _ => unreachable!(),
            }
        }
        out
    }

    #[test]
    fn matches_symphonia_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(u16, u16, bool); 6] = [
            (1, 8, false),
            (1, 16, false),
            (1, 24, false),
            (1, 32, false),
            (3, 32, true),
            (3, 64, true),
        ];
        let mut checked = 0;
        for (tag, bits, float) in cases {
            for channels in [1u16, 2, 3] {
                for extensible in [false, true] {
                    // Spans several parallel blocks with a ragged last one.
                    let frames = 2 * FRAMES_PER_TASK + 77;
                    let data = sample_bytes(bits, float, frames * usize::from(channels));
                    let bytes = wav_bytes(&fmt_chunk(tag, channels, bits, extensible), &data);
                    let path = dir
                        .path()
                        .join(format!("t{tag}_{bits}_{channels}_{extensible}.wav"));
                    std::fs::write(&path, &bytes).unwrap();
                    let what = format!("{}", path.display());
                    let fast = decode(&path)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{what}: not taken"));
                    let reference = crate::decode::decode_symphonia_for_tests(&path).unwrap();
                    assert_eq!(fast.sample_rate, reference.sample_rate, "{what}");
                    assert_eq!(fast.channels.len(), reference.channels.len(), "{what}");
                    for (a, b) in fast.channels.iter().zip(&reference.channels) {
                        assert_eq!(a.len(), b.len(), "{what}");
                        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{what}: samples differ from symphonia");
                    }
                    let (mono, sr, _) = decode_mono(&path).unwrap().unwrap();
                    assert_eq!(sr, 8000);
                    let want = reference.mono();
                    let same = mono
                        .iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same && mono.len() == want.len(), "{what}: mono differs");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 36);
    }

    #[test]
    fn unusual_files_are_left_to_symphonia() {
        let dir = tempfile::tempdir().unwrap();
        let good = wav_bytes(&fmt_chunk(1, 1, 16, false), &sample_bytes(16, false, 100));
        let write = |name: &str, b: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, b).unwrap();
            p
        };
        assert!(decode(&write("good.wav", &good)).unwrap().is_some());
        // Truncated data chunk, compressed format, padding bits, not RIFF at all.
        assert!(decode(&write("cut.wav", &good[..good.len() - 10]))
            .unwrap()
            .is_none());
        let adpcm = wav_bytes(&fmt_chunk(2, 1, 4, false), &[0u8; 64]);
        assert!(decode(&write("adpcm.wav", &adpcm)).unwrap().is_none());
        let mut padded = fmt_chunk(1, 1, 24, true);
        padded[18..20].copy_from_slice(&20u16.to_le_bytes());
        let padded = wav_bytes(&padded, &sample_bytes(24, false, 30));
        assert!(decode(&write("pad.wav", &padded)).unwrap().is_none());
        assert!(decode(&write("x.wav", b"OggS not a wav file"))
            .unwrap()
            .is_none());
        let missing = dir.path().join("missing.wav");
        assert!(matches!(decode(&missing), Err(AudioError::Io { .. })));
    }
}
