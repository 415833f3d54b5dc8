//! The JPEG header walk: MJPEG frames without Huffman tables, the start of scan, the EXIF orientation, the
//! picture size.
//!
//! Many UVC webcams send MJPEG frames that omit the DHT segment and rely on the decoder to use the standard
//! tables of the JPEG specification (ITU T.81 Annex K.3), as libjpeg does for motion JPEG. zune-jpeg refuses
//! such frames, so for it the standard tables are spliced in before the start of scan.

/// The header's segments, up to and including the start of scan: (marker, offset of the marker, body, cut
/// short where the data ends). Ends early at anything that is not a marker (a malformed header, which the
/// decoder reports).
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, usize, &[u8])> {
    let mut i = 2;
    let mut done = false;
    std::iter::from_fn(move || {
        while !done && i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
            let marker = jpeg[i + 1];
            if marker == 0xFF {
                i += 1; // fill byte
                continue;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            let (at, body) = (i, jpeg.get(i + 4..(i + 2 + len).min(jpeg.len())).unwrap_or_default());
            done = marker == 0xDA;
            i += 2 + len;
            return Some((marker, at, body));
        }
        None
    })
}

/// Walks the header segments: the offset of the start-of-scan marker, and whether a DHT segment came first.
fn scan_header(jpeg: &[u8]) -> Option<(usize, bool)> {
    let mut has_dht = false;
    for (marker, at, _) in segments(jpeg) {
        match marker {
            0xC4 => has_dht = true,
            0xDA => return Some((at, has_dht)),
            _ => {}
        }
    }
    None
}

/// The offset of the start-of-scan marker.
pub fn start_of_scan(jpeg: &[u8]) -> Option<usize> {
    scan_header(jpeg).map(|(sos, _)| sos)
}

/// The EXIF orientation of a JPEG: the first APP1 `Exif` segment before the start of scan, if it has one.
pub fn exif_orientation(jpeg: &[u8]) -> Option<image::metadata::Orientation> {
    segments(jpeg)
        .take_while(|(marker, _, _)| *marker != 0xDA)
        .find_map(|(marker, _, body)| (marker == 0xE1).then(|| body.strip_prefix(b"Exif\0\0")).flatten())
        .and_then(image::metadata::Orientation::from_exif_chunk)
}

/// The picture's (width, height) from its start-of-frame segment (any SOFn), before the start of scan.
pub fn frame_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    if jpeg.get(..2) != Some(&[0xFF, 0xD8]) {
        return None;
    }
    // SOF0-SOF15, except DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
    let sof = segments(jpeg)
        .take_while(|(marker, _, _)| *marker != 0xDA)
        .find(|(marker, _, _)| (0xC0..=0xCF).contains(marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC))?
        .2;
    let side = |at: usize| Some(u32::from(u16::from_be_bytes([*sof.get(at)?, *sof.get(at + 1)?])));
    let (height, width) = (side(1)?, side(3)?);
    (width > 0 && height > 0).then_some((width, height))
}

/// Where the start-of-scan marker is, if the header before it has no DHT segment.
pub fn missing_huffman_tables(jpeg: &[u8]) -> Option<usize> {
    scan_header(jpeg).and_then(|(sos, has_dht)| (!has_dht).then_some(sos))
}

/// Copies `jpeg` into `out` with the standard Huffman tables inserted at `sos`.
pub fn with_standard_tables(jpeg: &[u8], sos: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&jpeg[..sos]);
    let body_len: usize = TABLES.iter().map(|(_, bits, values)| 1 + bits.len() + values.len()).sum();
    out.extend_from_slice(&[0xFF, 0xC4]);
    out.extend_from_slice(&((body_len + 2) as u16).to_be_bytes());
    for (class_and_id, bits, values) in TABLES {
        out.push(*class_and_id);
        out.extend_from_slice(*bits);
        out.extend_from_slice(values);
    }
    out.extend_from_slice(&jpeg[sos..]);
}

/// (table class << 4 | id, code counts per length 1..16, symbols): DC/AC luminance (0) and chrominance (1).
const TABLES: &[(u8, &[u8; 16], &[u8])] = &[
    (0x00, &[0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
    (0x01, &[0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
    (0x10, &[0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d], &AC_LUMINANCE),
    (0x11, &[0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77], &AC_CHROMINANCE),
];

#[rustfmt::skip]
const AC_LUMINANCE: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

#[rustfmt::skip]
const AC_CHROMINANCE: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_size_comes_from_the_start_of_frame() {
        for (w, h) in [(640u32, 480u32), (1921, 1081), (1, 1)] {
            let img = image::RgbImage::new(w, h);
            let mut jpeg = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).expect("encodes");
            assert_eq!(frame_size(&jpeg), Some((w, h)));
            // Cut before its start of frame, or not a JPEG: no size.
            let sof = (2..jpeg.len()).find(|&i| jpeg[i - 1] == 0xFF && jpeg[i] == 0xC0).expect("SOF0");
            assert_eq!(frame_size(&jpeg[..sof + 4]), None);
            assert_eq!(frame_size(&jpeg[1..]), None);
        }
    }

    #[test]
    fn code_counts_match_symbol_counts() {
        for (id, bits, values) in TABLES {
            let n: usize = bits.iter().map(|&b| usize::from(b)).sum();
            assert_eq!(n, values.len(), "table {id:#x}");
        }
    }
}
