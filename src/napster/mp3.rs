//! What `napster share` announces about an MP3: bit rate, sample rate and length,
//! read from the file's first MPEG audio frame (after skipping an ID3v2 tag), a
//! Xing/Info or VBRI header when the encoder wrote one (variable bit rate), and
//! the file's length otherwise (constant bit rate, less an ID3v1 tag at the end).
//!
//! Only the headers are read (a few KiB after any ID3v2 tag), never the audio.
//! A frame sync is taken only when the next frame's header is also where the
//! first one's length says, so stray 0xFF bytes in a tag or junk are skipped.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The attributes a 100 (share) message carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mp3Info {
    /// Kilobits per second (the average for a variable bit rate).
    pub bitrate: u32,
    /// Samples per second.
    pub freq: u32,
    /// Length in whole seconds.
    pub seconds: u32,
}

/// Bytes scanned for the first frame after the ID3v2 tag.
const SCAN: usize = 64 * 1024;

/// One MPEG audio frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    /// 1 for MPEG-1, 2 for MPEG-2, 25 for MPEG-2.5.
    version: u8,
    layer: u8,
    bitrate: u32,
    freq: u32,
    mono: bool,
    len: usize,
    samples: u32,
}

fn header(b: &[u8]) -> Option<Header> {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = match (b[1] >> 3) & 3 {
        0 => 25,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let layer = match (b[1] >> 1) & 3 {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let bi = (b[2] >> 4) as usize;
    if bi == 0 || bi == 15 {
        return None; // free format or invalid
    }
    const V1L1: [u32; 14] = [
        32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ];
    const V1L2: [u32; 14] = [
        32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ];
    const V1L3: [u32; 14] = [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2L1: [u32; 14] = [
        32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ];
    const V2L23: [u32; 14] = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let table = match (version, layer) {
        (1, 1) => &V1L1,
        (1, 2) => &V1L2,
        (1, _) => &V1L3,
        (_, 1) => &V2L1,
        _ => &V2L23,
    };
    let bitrate = table[bi - 1];
    let fi = ((b[2] >> 2) & 3) as usize;
    if fi == 3 {
        return None;
    }
    let freq = [44100, 48000, 32000][fi]
        / match version {
            1 => 1,
            2 => 2,
            _ => 4,
        };
    let pad = ((b[2] >> 1) & 1) as usize;
    let (samples, len) = match (layer, version) {
        (1, _) => (
            384,
            (12 * bitrate as usize * 1000 / freq as usize + pad) * 4,
        ),
        (2, _) | (3, 1) => (1152, 144 * bitrate as usize * 1000 / freq as usize + pad),
        _ => (576, 72 * bitrate as usize * 1000 / freq as usize + pad),
    };
    Some(Header {
        version,
        layer,
        bitrate,
        freq,
        mono: b[3] >> 6 == 3,
        len,
        samples,
    })
}

/// The first frame in `buf` whose successor is where it should be (or which
/// ends exactly at the end of the data): its offset and header.
fn first_frame(buf: &[u8], at_end: bool) -> Option<(usize, Header)> {
    let mut i = 0;
    while i + 4 <= buf.len() {
        let at = i + memchr::memchr(0xFF, &buf[i..])?;
        if let Some(h) = header(&buf[at..]) {
            let next = at + h.len;
            let follows = match buf.get(next..next + 4) {
                Some(n) => header(n).is_some_and(|n| {
                    n.version == h.version && n.layer == h.layer && n.freq == h.freq
                }),
                None => at_end && next == buf.len(),
            };
            if follows {
                return Some((at, h));
            }
        }
        i = at + 1;
    }
    None
}

/// Frame count from a Xing/Info or VBRI header inside the first frame.
fn vbr_frames(frame: &[u8], h: &Header) -> Option<u32> {
    let side = match (h.version, h.mono) {
        (1, true) => 17,
        (1, false) => 32,
        (_, true) => 9,
        (_, false) => 17,
    };
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if let Some(x) = frame.get(4 + side..4 + side + 12) {
        if &x[..4] == b"Xing" || &x[..4] == b"Info" {
            let flags = be(&x[4..8]);
            return (flags & 1 != 0).then(|| be(&x[8..12]));
        }
    }
    let v = frame.get(36..36 + 18)?;
    (&v[..4] == b"VBRI").then(|| be(&v[14..18]))
}

/// Reads `path`'s MP3 attributes; `None` if no MPEG audio frame is found.
pub fn read(path: &Path) -> std::io::Result<Option<Mp3Info>> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut head = [0u8; 10];
    let mut start = 0u64;
    let n = read_full(&mut f, &mut head)?;
    if n == 10 && &head[..3] == b"ID3" && head[6..10].iter().all(|&b| b < 0x80) {
        let tag = head[6..10].iter().fold(0u64, |a, &b| a << 7 | b as u64);
        let footer = if head[5] & 0x10 != 0 { 10 } else { 0 };
        start = 10 + tag + footer;
    }
    let mut id3v1 = 0;
    if size >= start + 128 {
        let mut tag = [0u8; 3];
        f.seek(SeekFrom::Start(size - 128))?;
        if read_full(&mut f, &mut tag)? == 3 && &tag == b"TAG" {
            id3v1 = 128;
        }
    }
    let end = size - id3v1;
    if start >= end {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(start))?;
    let want = ((end - start) as usize).min(SCAN);
    let mut buf = vec![0u8; want];
    let got = read_full(&mut f, &mut buf)?;
    buf.truncate(got);
    let Some((at, h)) = first_frame(&buf, start + got as u64 == end) else {
        return Ok(None);
    };
    let audio = end - start - at as u64;
    let info = match vbr_frames(&buf[at..], &h) {
        Some(frames) if frames > 0 => {
            let secs = frames as u64 * h.samples as u64 / h.freq as u64;
            let bitrate = (audio * 8)
                .checked_div(secs)
                .map_or(h.bitrate, |b| (b / 1000) as u32);
            Mp3Info {
                bitrate,
                freq: h.freq,
                seconds: secs as u32,
            }
        }
        _ => Mp3Info {
            bitrate: h.bitrate,
            freq: h.freq,
            seconds: (audio * 8 / (h.bitrate as u64 * 1000)) as u32,
        },
    };
    Ok(Some(info))
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Builds MP3-shaped test data: an optional ID3v2 tag of `tag` bytes, then
/// `frames` MPEG-1 Layer III frames at `kbps` and 44.1 kHz (stereo), the first
/// one carrying a Xing header when `xing_frames` is given.
pub fn synthetic(tag: usize, frames: usize, kbps: u32, xing_frames: Option<u32>) -> Vec<u8> {
    let bi = [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ]
    .iter()
    .position(|&b| b == kbps)
    .expect("an MPEG-1 Layer III bit rate") as u8
        + 1;
    let mut out = Vec::new();
    if tag > 0 {
        out.extend_from_slice(b"ID3\x03\x00\x00");
        let t = tag as u32;
        out.extend_from_slice(&[
            (t >> 21) as u8 & 0x7F,
            (t >> 14) as u8 & 0x7F,
            (t >> 7) as u8 & 0x7F,
            t as u8 & 0x7F,
        ]);
        // Tag bytes, with frame-sync look-alikes in them.
        out.extend((0..tag).map(|i| if i % 7 == 0 { 0xFF } else { 0xFB }));
    }
    let len = 144 * kbps as usize * 1000 / 44100;
    for i in 0..frames {
        let start = out.len();
        out.extend_from_slice(&[0xFF, 0xFB, bi << 4, 0x00]);
        if i == 0 {
            if let Some(n) = xing_frames {
                out.resize(start + 4 + 32, 0);
                out.extend_from_slice(b"Xing");
                out.extend_from_slice(&1u32.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        out.resize(start + len, 0x55);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_of(data: &[u8]) -> Option<Mp3Info> {
        let dir = std::env::temp_dir().join(format!("servent-mp3-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.mp3");
        std::fs::write(&p, data).unwrap();
        let r = read(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn header_fields() {
        // MPEG-1 Layer III, 128 kbps, 44.1 kHz, no padding: 417 bytes.
        let h = header(&[0xFF, 0xFB, 0x90, 0x00]).unwrap();
        assert_eq!(
            (h.version, h.layer, h.bitrate, h.freq, h.len, h.samples),
            (1, 3, 128, 44100, 417, 1152)
        );
        // MPEG-2 Layer III, 64 kbps, 22.05 kHz, padded, mono.
        let h = header(&[0xFF, 0xF3, 0x82, 0xC0]).unwrap();
        assert_eq!(
            (h.version, h.bitrate, h.freq, h.len, h.samples, h.mono),
            (2, 64, 22050, 209, 576, true)
        );
        for bad in [
            [0xFF, 0xFB, 0xF0, 0x00],
            [0xFF, 0xFB, 0x0C, 0x00],
            [0xFF, 0xE9, 0x90, 0],
            [0xFE, 0xFB, 0x90, 0],
        ] {
            assert_eq!(header(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn constant_bit_rate_after_an_id3_tag() {
        // 1000 frames of 417 bytes at 128 kbps: 26 s.
        let data = synthetic(3000, 1000, 128, None);
        assert_eq!(
            info_of(&data),
            Some(Mp3Info {
                bitrate: 128,
                freq: 44100,
                seconds: 26
            })
        );
        // An ID3v1 tag at the end is not audio.
        let mut with_v1 = synthetic(0, 100, 320, None);
        with_v1.extend_from_slice(b"TAG");
        with_v1.resize(with_v1.len() + 125, b' ');
        let info = info_of(&with_v1).unwrap();
        assert_eq!((info.bitrate, info.seconds), (320, 2));
    }

    #[test]
    fn variable_bit_rate_from_the_xing_header() {
        // The Xing header says 5000 frames: 5000 * 1152 / 44100 = 130 s.
        let data = synthetic(0, 200, 192, Some(5000));
        let info = info_of(&data).unwrap();
        assert_eq!((info.freq, info.seconds), (44100, 130));
    }

    #[test]
    fn not_mp3() {
        assert_eq!(info_of(b""), None);
        assert_eq!(info_of(&[0xFF; 5000]), None);
        assert_eq!(info_of(b"just some text, not audio at all"), None);
        // A tag claiming more than the file holds.
        assert_eq!(info_of(b"ID3\x03\x00\x00\x7f\x7f\x7f\x7f"), None);
    }
}
