//! Just enough ISO-BMFF (MP4/M4A) parsing to read the audio track's edit list, which symphonia
//! 0.6 parses but does not apply. The edit list is how encoders record AAC priming: ffmpeg
//! writes `media_time = 1024` (Apple encoders 2112), meaning the first 1024 decoded frames are
//! not part of the presentation.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Failure while reading the box tree.
#[derive(Debug)]
pub(crate) enum Mp4Error {
    Io(std::io::Error),
    Malformed(String),
}

impl From<std::io::Error> for Mp4Error {
    fn from(e: std::io::Error) -> Self {
        Mp4Error::Io(e)
    }
}

/// The first audio track's presentation edit, in container units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AudioEdit {
    /// Total duration of leading empty edits (silence before the track starts), movie timescale.
    pub empty_duration: u64,
    /// Media time where presentation starts (priming to skip), media timescale.
    pub media_time: u64,
    /// Media (mdhd) timescale.
    pub media_timescale: u32,
    /// Presented duration of the first non-empty edit, movie timescale (`None` = to the end).
    pub segment_duration: Option<u64>,
    /// Movie (mvhd) timescale.
    pub movie_timescale: u32,
}

/// The `moov` box is metadata only; refuse anything implausibly large instead of allocating it.
const MAX_MOOV_BYTES: u64 = 256 << 20;

/// Reads the edit list of the first `soun` track; `Ok(None)` when the file has no edit list for
/// it (or no audio track).
pub(crate) fn first_audio_edit(path: &Path) -> Result<Option<AudioEdit>, Mp4Error> {
    let mut f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let Some((start, len)) = find_top_level(&mut f, file_len, b"moov")? else {
        return Ok(None);
    };
    if len > MAX_MOOV_BYTES {
        return Err(Mp4Error::Malformed(format!("moov box of {len} bytes")));
    }
    f.seek(SeekFrom::Start(start))?;
    let mut moov = vec![0u8; len as usize];
    f.read_exact(&mut moov)?;

    let mut movie_timescale = None;
    for (kind, body) in boxes(&moov)? {
        if &kind == b"mvhd" {
            movie_timescale = Some(header_timescale(body)?);
        }
    }
    let movie_timescale =
        movie_timescale.ok_or_else(|| Mp4Error::Malformed("moov without mvhd".into()))?;
    for (kind, trak) in boxes(&moov)? {
        if &kind != b"trak" {
            continue;
        }
        let mut elst = None;
        let mut handler = None;
        let mut media_timescale = None;
        for (k, b) in boxes(trak)? {
            match &k {
                b"edts" => {
                    for (k2, b2) in boxes(b)? {
                        if &k2 == b"elst" {
                            elst = Some(b2);
                        }
                    }
                }
                b"mdia" => {
                    for (k2, b2) in boxes(b)? {
                        match &k2 {
                            b"hdlr" => handler = b2.get(8..12).map(|h| [h[0], h[1], h[2], h[3]]),
                            b"mdhd" => media_timescale = Some(header_timescale(b2)?),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if handler != Some(*b"soun") {
            continue;
        }
        let media_timescale =
            media_timescale.ok_or_else(|| Mp4Error::Malformed("audio trak without mdhd".into()))?;
        return match elst {
            None => Ok(None),
            Some(body) => parse_elst(body, media_timescale, movie_timescale),
        };
    }
    Ok(None)
}

fn parse_elst(
    body: &[u8],
    media_timescale: u32,
    movie_timescale: u32,
) -> Result<Option<AudioEdit>, Mp4Error> {
    let bad = || Mp4Error::Malformed("truncated elst box".into());
    let version = *body.first().ok_or_else(bad)?;
    let count = be_u32(body, 4).ok_or_else(bad)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    let mut empty_duration = 0u64;
    for i in 0..count {
        let off = 8 + i * entry_len;
        let (seg, media_time) = if version == 1 {
            (
                be_u64(body, off).ok_or_else(bad)?,
                be_u64(body, off + 8).ok_or_else(bad)? as i64,
            )
        } else {
            (
                u64::from(be_u32(body, off).ok_or_else(bad)?),
                i64::from(be_u32(body, off + 4).ok_or_else(bad)? as i32),
            )
        };
        if media_time == -1 {
            empty_duration += seg;
            continue;
        }
        if media_time < 0 {
            return Err(Mp4Error::Malformed(format!("elst media_time {media_time}")));
        }
        return Ok(Some(AudioEdit {
            empty_duration,
            media_time: media_time as u64,
            media_timescale,
            segment_duration: (seg > 0).then_some(seg),
            movie_timescale,
        }));
    }
    Ok(None)
}

/// Timescale field of an `mvhd`/`mdhd` full box (version 0: offset 12, version 1: offset 20).
fn header_timescale(body: &[u8]) -> Result<u32, Mp4Error> {
    let off = if body.first() == Some(&1) { 20 } else { 12 };
    be_u32(body, off).ok_or_else(|| Mp4Error::Malformed("truncated mvhd/mdhd box".into()))
}

fn be_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be_u64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

/// A child box: four-character type and body (without the size/type header).
type Child<'a> = ([u8; 4], &'a [u8]);

/// Children of a box body, in file order.
fn boxes(mut data: &[u8]) -> Result<Vec<Child<'_>>, Mp4Error> {
    let mut out = Vec::new();
    while data.len() >= 8 {
        let size32 = be_u32(data, 0).unwrap_or(0) as u64;
        let kind = [data[4], data[5], data[6], data[7]];
        let (header, size) = match size32 {
            0 => (8, data.len() as u64),
            1 => (
                16,
                be_u64(data, 8).ok_or_else(|| Mp4Error::Malformed("short box".into()))?,
            ),
            s => (8, s),
        };
        if size < header || size > data.len() as u64 {
            return Err(Mp4Error::Malformed(format!(
                "box '{}' of size {size} overruns its parent",
                String::from_utf8_lossy(&kind)
            )));
        }
        out.push((kind, &data[header as usize..size as usize]));
        data = &data[size as usize..];
    }
    Ok(out)
}

/// Finds a top-level box by seeking over its siblings; returns `(body offset, body length)`.
fn find_top_level(
    f: &mut File,
    file_len: u64,
    want: &[u8; 4],
) -> Result<Option<(u64, u64)>, Mp4Error> {
    let mut pos = 0u64;
    while pos + 8 <= file_len {
        f.seek(SeekFrom::Start(pos))?;
        let mut h = [0u8; 16];
        f.read_exact(&mut h[..8])?;
        let size32 = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let (header, size) = match size32 {
            0 => (8, file_len - pos),
            1 => {
                f.read_exact(&mut h[8..16])?;
                (16, be_u64(&h, 8).unwrap_or(0))
            }
            s => (8, s),
        };
        if size < header || pos + size > file_len {
            return Err(Mp4Error::Malformed(format!(
                "top-level box at byte {pos} overruns the file"
            )));
        }
        if &h[4..8] == want {
            return Ok(Some((pos + header, size - header)));
        }
        pos += size;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn parses_v0_edit_list_with_leading_empty_edit() -> Result<(), Mp4Error> {
        let mut body = vec![0u8, 0, 0, 0];
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(&500u32.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&[0, 1, 0, 0]);
        body.extend_from_slice(&2000u32.to_be_bytes());
        body.extend_from_slice(&1024i32.to_be_bytes());
        body.extend_from_slice(&[0, 1, 0, 0]);
        let e = parse_elst(&body, 44_100, 1000)?;
        assert_eq!(
            e,
            Some(AudioEdit {
                empty_duration: 500,
                media_time: 1024,
                media_timescale: 44_100,
                segment_duration: Some(2000),
                movie_timescale: 1000,
            })
        );
        Ok(())
    }

    #[test]
    fn overrunning_box_is_malformed() {
        let mut b = make_box(b"trak", &[0; 4]);
        b[3] = 200;
        assert!(matches!(boxes(&b), Err(Mp4Error::Malformed(_))));
        assert_eq!(
            boxes(&make_box(b"free", &[1, 2]))
                .map(|v| v.len())
                .unwrap_or(0),
            1
        );
    }
}
