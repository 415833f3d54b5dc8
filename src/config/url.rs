//! Camera URLs as users type them: where their user info (`user:password@`) is, so that it can be split off
//! (percent-decoded, for the source element's user and password properties) and redacted from every message,
//! and which sources only look like URLs (`rtsp:/admin:pw@cam`, a slash missing) and are refused rather than
//! taken for file names and echoed in "does not exist" lines.
//!
//! RFC 3986 first: the authority runs from `scheme://` to the first `/`, `?` or `#`, and its user info to the
//! last `@` in it. Users also type passwords with a raw `/`, `?` or `#` in them (`rtsp://admin:pa/ss@cam/x`),
//! which RFC 3986 would read as the end of the authority: when the authority has no `@` but a later `@`
//! follows `user:` and precedes a host, everything up to that last `@` is taken for the user info too. That
//! errs on the side of hiding: a query such as `?u=a:b@c` after a port is redacted as well.

/// The camera URL schemes GStreamer is asked for.
pub const CAMERA_SCHEMES: &[&str] = &["rtsp", "rtsps", "rtspt", "http", "https"];

/// The length of `text`'s scheme (`rtsp` in `rtsp://…`), when it starts with one followed by `:`.
fn scheme_len(text: &str) -> Option<usize> {
    let end = text.find(':')?;
    let scheme = &text[..end];
    let mut chars = scheme.chars();
    (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(end)
}

/// Whether `host` (up to the path) can be a host with an optional port.
fn host_like(host: &str) -> bool {
    !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%'))
}

/// The byte range of `url`'s user info (without its `@`), after `scheme:` and any slashes.
fn userinfo(url: &str) -> Option<std::ops::Range<usize>> {
    let start = scheme_len(url)? + 1;
    let start = start + url[start..].bytes().take_while(|&b| b == b'/').count();
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if let Some(at) = authority.rfind('@') {
        return Some(start..start + at);
    }
    // A raw `/`, `?` or `#` in a password: the last `@` that follows `user:` and precedes a host.
    let at = rest.rfind('@')?;
    let after = &rest[at + 1..];
    let host = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    (rest[..at].contains(':') && host_like(host)).then_some(start..start + at)
}

/// `url` with its user info replaced by `***`, for messages: `rtsp://***@cam:554/s`. Whatever the URL's shape
/// (a raw `/` in the password, a slash missing after the scheme).
pub fn redact(url: &str) -> String {
    match userinfo(url) {
        Some(r) => format!("{}***{}", &url[..r.start], &url[r.end..]),
        None => url.to_string(),
    }
}

/// `text` (a message that may quote URLs: GStreamer's) with the user info of every URL in it redacted.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        // A URL quoted or bracketed: the redaction starts at its scheme.
        let lead = word.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(word.len());
        out.push_str(&word[..lead]);
        out.push_str(&redact(&word[lead..]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// RFC 3986 percent-decoding (`p%40ss` is `p@ss`); a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` without its user info, and the user name and password it carried, percent-decoded.
pub fn split_credentials(url: &str) -> (String, Option<String>, Option<String>) {
    let Some(r) = userinfo(url) else { return (url.to_string(), None, None) };
    let info = &url[r.clone()];
    let (user, password) = match info.split_once(':') {
        Some((u, p)) => (u, Some(percent_decode(p))),
        None => (info, None),
    };
    let bare = format!("{}{}", &url[..r.start], &url[r.end + 1..]);
    (bare, Some(percent_decode(user)).filter(|u| !u.is_empty()), password)
}

/// Whether `url`'s user info carries a password (`user:password@`).
pub fn has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|r| url[r].contains(':'))
}

/// Why a camera `source` is a malformed URL, in words that never quote its user info: a camera scheme not
/// followed by `//` (`rtsp:/admin:pw@cam`, which would otherwise be taken for a file name), a `word:…@…`
/// that is no file, or a camera URL without a host.
pub fn url_problem(source: &str) -> Option<String> {
    let s = source.trim();
    let scheme = &s[..scheme_len(s)?];
    let after = &s[scheme.len() + 1..];
    let camera = CAMERA_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str());
    if !after.starts_with("//") {
        // A file name may contain a colon; one that also has an `@` (or a camera scheme) is a mistyped URL.
        if camera || userinfo(s).is_some() {
            return Some(format!(
                "{} is a malformed URL: a URL starts with scheme:// (e.g. rtsp://user@host:554/path; the password \
                 goes in password_file)",
                redact(s)
            ));
        }
        return None;
    }
    if !camera {
        return None;
    }
    let start = scheme.len() + 3;
    let from = userinfo(s).map_or(start, |r| r.end + 1);
    let rest = &s[from..];
    let host = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |h| h.0);
    if host.is_empty() {
        return Some(format!("{} has no host (e.g. rtsp://user@host:554/path)", redact(s)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_redacted_whatever_the_url_s_shape() {
        assert_eq!(redact("rtsp://admin:s3cret@10.0.0.5:554/stream1"), "rtsp://***@10.0.0.5:554/stream1");
        assert_eq!(redact("rtsp://admin@cam/x"), "rtsp://***@cam/x");
        assert_eq!(redact("http://cam/snap.jpg?u=a@b"), "http://cam/snap.jpg?u=a@b");
        // A raw slash, `?` or `#` in the password; an `@` in it.
        assert_eq!(redact("rtsp://admin:pa/ss@host:554/cam"), "rtsp://***@host:554/cam");
        assert_eq!(redact("rtsp://admin:pa?s#s@host/cam"), "rtsp://***@host/cam");
        assert_eq!(redact("rtsp://admin:p@ss@host/cam"), "rtsp://***@host/cam");
        // Malformed: a slash missing, or none.
        assert_eq!(redact("rtsp:/admin:S3cr3t@host/cam"), "rtsp:/***@host/cam");
        assert_eq!(redact("rtsp:admin:S3cr3t@host/cam"), "rtsp:***@host/cam");
        assert_eq!(redact("/srv/frames/a@b.jpg"), "/srv/frames/a@b.jpg");
        assert_eq!(
            redact_text("Could not open \"rtsp://admin:pa/ss@host/cam\" (rtsp:/u:x@h)\n next"),
            "Could not open \"rtsp://***@host/cam\" (rtsp:/***@h)\n next"
        );
    }

    #[test]
    fn credentials_are_split_off_and_percent_decoded() {
        assert_eq!(
            split_credentials("rtsp://admin:pw@cam:554/s"),
            ("rtsp://cam:554/s".into(), Some("admin".into()), Some("pw".into()))
        );
        assert_eq!(split_credentials("rtsp://cam/s"), ("rtsp://cam/s".into(), None, None));
        assert_eq!(
            split_credentials("rtsp://ad%6Din:p%40ss%3Aw@cam/s"),
            ("rtsp://cam/s".into(), Some("admin".into()), Some("p@ss:w".into()))
        );
        assert_eq!(
            split_credentials("rtsp://admin:pa/ss@cam/s"),
            ("rtsp://cam/s".into(), Some("admin".into()), Some("pa/ss".into()))
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert!(has_password("rtsp://a:b/c@h/x") && !has_password("rtsp://a@h/x") && !has_password("rtsp://h/x"));
    }

    #[test]
    fn malformed_urls_are_named_without_their_secret() {
        for source in ["rtsp:/admin:S3cr3t@host/cam", "rtsp:admin:S3cr3t@host", "cam:S3cr3t@host/x", "rtsp://u:S3cr3t@"]
        {
            let why = url_problem(source).unwrap_or_else(|| panic!("{source} passes"));
            assert!(!why.contains("S3cr3t"), "{why}");
        }
        assert!(url_problem("rtsp://u:S3cr3t@:554/cam").is_some());
        for fine in ["rtsp://u:pw@cam/x", "http://cam:8080/s.jpg", "/srv/a:b.jpg", "frames/x.jpg", "0", "file:///x"] {
            assert_eq!(url_problem(fine), None, "{fine}");
        }
    }
}
