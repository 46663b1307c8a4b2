//! Recognising an image from its first bytes.
//!
//! Servers often send no `Content-Type`, or a generic one such as
//! `application/octet-stream` (S3 objects uploaded without a type are the classic case). The
//! first 16 bytes are enough to tell the formats a web page can show from an HTML error page.

/// How many leading bytes [`looks_like_image`] wants; the checker asks for exactly this many
/// with `Range: bytes=0-15`.
pub const SNIFF_LEN: usize = 16;

/// True when `prefix` starts like an image format that browsers display.
pub fn looks_like_image(prefix: &[u8]) -> bool {
    let starts = |magic: &[u8]| prefix.starts_with(magic);
    starts(b"\x89PNG\r\n\x1a\n")
        || starts(b"\xff\xd8\xff")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        || (starts(b"RIFF") && prefix.get(8..12) == Some(b"WEBP"))
        || starts(b"BM")
        || starts(b"\x00\x00\x01\x00") // ICO
        || starts(b"II*\x00")
        || starts(b"MM\x00*")
        // ISO-BMFF: AVIF and HEIC carry `ftyp` at offset 4 and a brand after it.
        || (prefix.get(4..8) == Some(b"ftyp")
            && matches!(
                prefix.get(8..12),
                Some(b"avif" | b"avis" | b"heic" | b"heix" | b"mif1" | b"msf1")
            ))
        || looks_like_svg(prefix)
}

fn looks_like_svg(prefix: &[u8]) -> bool {
    let text = prefix.trim_ascii_start();
    text.starts_with(b"<svg") || text.starts_with(b"<?xml")
}

/// True when a `Content-Type` says nothing about the content, so the bytes must decide.
pub(crate) fn is_generic_content_type(essence: &str) -> bool {
    matches!(
        essence,
        "" | "application/octet-stream"
            | "binary/octet-stream"
            | "application/binary"
            | "application/unknown"
            | "application/x-unknown"
    )
}

/// The lower-case media type of a `Content-Type` value, without its parameters.
pub(crate) fn content_type_essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_formats() {
        assert!(looks_like_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(looks_like_image(b"\xff\xd8\xff\xe0\0\x10JFIF"));
        assert!(looks_like_image(b"GIF89a\x01\0"));
        assert!(looks_like_image(b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(looks_like_image(b"\0\0\0\x1cftypavif"));
        assert!(looks_like_image(b"  <svg xmlns="));
    }

    #[test]
    fn rejects_html_and_text() {
        assert!(!looks_like_image(b"<!DOCTYPE html>"));
        assert!(!looks_like_image(b"<html><body>"));
        assert!(!looks_like_image(b"Not Found"));
        assert!(!looks_like_image(b""));
        assert!(!looks_like_image(b"RIFF\x10\0\0\0WAVEfmt "));
    }

    #[test]
    fn content_type_parameters_are_ignored() {
        assert_eq!(content_type_essence("Image/PNG; charset=x"), "image/png");
        assert!(is_generic_content_type(&content_type_essence(
            "application/octet-stream"
        )));
    }
}
