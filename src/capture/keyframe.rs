//! Whether an H.264 or H.265 access unit is a whole key frame, as far as its start shows: a decoder that
//! meets a stream in the middle of a key frame (a client joining a live RTSP stream between two packets of
//! an IDR picture, or a loss inside one) conceals the missing slices, and that picture and every one that
//! refers to it until the next key frame come out as a smear that a classifier names with confidence (a grey
//! or green half-picture was a "rotary dial telephone"). libav's `output-corrupt = false` does not catch it:
//! the key frame counts as a recovery point. So the GStreamer capture lets a stream's pictures reach the
//! decoder only from a key frame whose first slice is the picture's first one.
//!
//! Pure byte parsing (no GStreamer): NAL units in Annex B (start codes) or length-prefixed framing
//! (`avc`/`hvc1` caps, the prefix size from the `codec_data` record).

/// The codec of a stream, by its caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

/// How NAL units are delimited in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `00 00 01` / `00 00 00 01` start codes (`stream-format=byte-stream`).
    AnnexB,
    /// A big-endian length of this many bytes before each NAL unit (`avc`, `avc3`, `hvc1`, `hev1`).
    Length(usize),
}

/// What the start of an access unit says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Start {
    /// Its first slice is a key picture's (H.264 IDR, H.265 IRAP).
    pub key: bool,
    /// Its first slice starts the picture (H.264 `first_mb_in_slice` 0, H.265
    /// `first_slice_segment_in_pic_flag`).
    pub first_slice: bool,
}

/// The prefix size a `codec_data` record gives (`avcC` byte 4, `hvcC` byte 21: `lengthSizeMinusOne`).
pub fn length_size(codec: Codec, codec_data: &[u8]) -> Option<usize> {
    let byte = match codec {
        Codec::H264 => *codec_data.get(4)?,
        Codec::H265 => *codec_data.get(21)?,
    };
    Some(usize::from(byte & 3) + 1)
}

/// The first slice of `au` (`None`: no slice in it, or a framing that does not parse).
pub fn first_slice(codec: Codec, framing: Framing, au: &[u8]) -> Option<Start> {
    nal_units(framing, au).find_map(|nal| slice_start(codec, nal))
}

/// A slice NAL unit's [`Start`]; `None` for other NAL units.
fn slice_start(codec: Codec, nal: &[u8]) -> Option<Start> {
    match codec {
        Codec::H264 => {
            let kind = nal.first()? & 0x1F;
            // 1: non-IDR slice, 5: IDR slice (2-4: data partitions, which start with the same header).
            if !(1..=5).contains(&kind) {
                return None;
            }
            // first_mb_in_slice is the header's first ue(v): 0 is the single bit 1.
            let first_slice = nal.get(1)? & 0x80 != 0;
            Some(Start { key: kind == 5, first_slice })
        }
        Codec::H265 => {
            let kind = (nal.first()? >> 1) & 0x3F;
            // 0-31: VCL (slice segments); 16-23: IRAP pictures (BLA, IDR, CRA and reserved).
            if kind > 31 {
                return None;
            }
            let first_slice = nal.get(2)? & 0x80 != 0;
            Some(Start { key: (16..=23).contains(&kind), first_slice })
        }
    }
}

/// The NAL units of a buffer, without their start codes or length prefixes.
fn nal_units(framing: Framing, data: &[u8]) -> Box<dyn Iterator<Item = &[u8]> + '_> {
    match framing {
        Framing::AnnexB => Box::new(AnnexB { data, at: find_start_code(data, 0) }),
        Framing::Length(size) => Box::new(LengthPrefixed { data, at: 0, size }),
    }
}

/// The index just past the next `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(3).position(|w| w == [0, 0, 1]).map(|i| from + i + 3)
}

struct AnnexB<'a> {
    data: &'a [u8],
    at: Option<usize>,
}

impl<'a> Iterator for AnnexB<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.at?;
        let next = find_start_code(self.data, start);
        self.at = next;
        // The next start code, less its three bytes and the zero a four-byte one begins with.
        let mut end = next.map_or(self.data.len(), |n| n - 3);
        while end > start && next.is_some() && self.data[end - 1] == 0 {
            end -= 1;
        }
        self.data.get(start..end)
    }
}

struct LengthPrefixed<'a> {
    data: &'a [u8],
    at: usize,
    size: usize,
}

impl<'a> Iterator for LengthPrefixed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let prefix = self.data.get(self.at..self.at + self.size)?;
        let len = prefix.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let start = self.at + self.size;
        let nal = self.data.get(start..start.checked_add(len)?)?;
        self.at = start + len;
        Some(nal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Annex B access unit of NAL units (4-byte start codes).
    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat()).collect()
    }

    fn length_prefixed(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat()).collect()
    }

    // H.264: access unit delimiter, SPS, PPS, SEI, then slices whose second byte starts with
    // first_mb_in_slice (bit 1: 0; bits 0…: a later macroblock).
    const AUD: &[u8] = &[0x09, 0xF0];
    const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1E];
    const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];
    const SEI: &[u8] = &[0x06, 0x05, 0x01, 0x00];
    const IDR_FIRST: &[u8] = &[0x65, 0x88, 0x84, 0x00];
    const IDR_LATER: &[u8] = &[0x65, 0x00, 0x5E, 0x20];
    const P_FIRST: &[u8] = &[0x41, 0x9A, 0x02, 0x00];

    #[test]
    fn a_whole_idr_picture_starts_at_its_first_slice_in_either_framing() {
        let au = [AUD, SPS, PPS, SEI, IDR_FIRST, IDR_LATER];
        let whole = Some(Start { key: true, first_slice: true });
        assert_eq!(first_slice(Codec::H264, Framing::AnnexB, &annex_b(&au)), whole);
        assert_eq!(first_slice(Codec::H264, Framing::Length(4), &length_prefixed(&au)), whole);
    }

    #[test]
    fn an_idr_picture_that_lost_its_first_slice_is_not_whole() {
        let au = [AUD, SPS, PPS, IDR_LATER];
        let cut = Some(Start { key: true, first_slice: false });
        assert_eq!(first_slice(Codec::H264, Framing::AnnexB, &annex_b(&au)), cut);
        assert_eq!(first_slice(Codec::H264, Framing::Length(4), &length_prefixed(&au)), cut);
    }

    #[test]
    fn a_delta_picture_is_not_a_key_one_and_a_buffer_without_slices_has_none() {
        assert_eq!(
            first_slice(Codec::H264, Framing::AnnexB, &annex_b(&[AUD, P_FIRST])),
            Some(Start { key: false, first_slice: true })
        );
        assert_eq!(first_slice(Codec::H264, Framing::AnnexB, &annex_b(&[AUD, SPS, PPS])), None);
        assert_eq!(first_slice(Codec::H264, Framing::AnnexB, b"no start code here"), None);
        // A length prefix running past the buffer ends the parse.
        assert_eq!(first_slice(Codec::H264, Framing::Length(4), &[0, 0, 9, 9, 0x65, 0x88]), None);
    }

    #[test]
    fn three_byte_start_codes_and_trailing_zeros_are_handled() {
        let mut au = vec![0, 0, 1];
        au.extend_from_slice(AUD);
        au.extend_from_slice(&[0, 0, 0, 0, 1]);
        au.extend_from_slice(IDR_LATER);
        let nals: Vec<&[u8]> = nal_units(Framing::AnnexB, &au).collect();
        assert_eq!(nals, [AUD, IDR_LATER]);
    }

    #[test]
    fn h265_irap_pictures_and_their_first_slice_segment_flag() {
        // NAL header: type << 1, then the layer/temporal byte; the slice header's first bit is
        // first_slice_segment_in_pic_flag.
        let vps: &[u8] = &[32 << 1, 0x01, 0x0C];
        let idr_first: &[u8] = &[19 << 1, 0x01, 0xAF, 0x00];
        let idr_later: &[u8] = &[19 << 1, 0x01, 0x2F, 0x00];
        let cra_first: &[u8] = &[21 << 1, 0x01, 0x80];
        let trail: &[u8] = &[1 << 1, 0x01, 0xD0];
        let start = |nals: &[&[u8]]| first_slice(Codec::H265, Framing::Length(4), &length_prefixed(nals));
        assert_eq!(start(&[vps, idr_first]), Some(Start { key: true, first_slice: true }));
        assert_eq!(start(&[vps, idr_later]), Some(Start { key: true, first_slice: false }));
        assert_eq!(start(&[cra_first]), Some(Start { key: true, first_slice: true }));
        assert_eq!(start(&[trail]), Some(Start { key: false, first_slice: true }));
    }

    #[test]
    fn the_prefix_size_comes_from_the_codec_data_record() {
        assert_eq!(length_size(Codec::H264, &[1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1]), Some(4));
        assert_eq!(length_size(Codec::H264, &[1, 0x42, 0xC0, 0x1E, 0xFD]), Some(2));
        assert_eq!(length_size(Codec::H264, &[1, 2]), None);
        let mut hvcc = vec![0u8; 23];
        hvcc[21] = 0x0F;
        assert_eq!(length_size(Codec::H265, &hvcc), Some(4));
    }
}
