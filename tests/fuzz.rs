//! Property tests on what comes from outside: config files, MQTT command payloads and JPEG headers. None
//! may panic, whatever the bytes; a config either parses or names at least one problem with its key; a
//! damaged JPEG never spoils the decoding of the next good one.
//!
//! 10^5 cases each by default (PROPTEST_CASES overrides); they run in seconds.

use proptest::prelude::*;

use camclassd::config::Config;
use camclassd::preprocess::{Decoder, Frame};
use camclassd::publish::command;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// A valid config, the seed that mutations start from.
const VALID: &str = r#"version = 1
[mqtt]
host = "127.0.0.1"
port = 1883
node_id = "pi"
username = "u"
password = "p"
qos = 1
reconnect_max = 30
commands = true
[mqtt.tls]
ca_file = "Cargo.toml"
[queue]
path = "/tmp/q.redb"
max_events = 1000
max_mb = 4
[homeassistant]
discovery_prefix = "homeassistant"
[health]
interval = 60
[model]
path = "Cargo.toml"
execution_providers = ["cpu"]
threads = 1
top_k = 5
min_score = 0.2
[model.preprocess]
mean = [0.5, 0.5, 0.5]
[[cameras]]
name = "porch"
source = "/dev/video0"
fps = 5
publish = "on_change"
debounce = 3
interval = 60
resolution = [640, 480]
"#;

/// Bytes that look like TOML often enough to get past the tokenizer.
fn tomlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_string()),
        Just("[mqtt]\n".to_string()),
        Just("[[cameras]]\n".to_string()),
        Just("[model]\n".to_string()),
        Just("[queue]\n".to_string()),
        Just("[mqtt.tls]\n".to_string()),
        Just("[homeassistant]\n".to_string()),
        "[a-z_.]{1,12} = ".prop_map(|s| s.to_string()),
        "-?[0-9]{1,20}(\\.[0-9]{1,5})?".prop_map(|s| s.to_string()),
        "\"[^\"\\\\]{0,20}\"".prop_map(|s| s.to_string()),
        Just("[1, 2, \"x\"]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("true".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// The valid config with one line replaced, duplicated or cut short.
fn mutated() -> impl Strategy<Value = String> {
    let lines = VALID.lines().count();
    (0..lines, 0..4u8, any::<String>(), 0..VALID.len()).prop_map(|(line, how, junk, cut)| {
        let mut out: Vec<String> = VALID.lines().map(str::to_string).collect();
        match how {
            0 => {
                let key = out[line].split('=').next().unwrap_or_default().to_string();
                out[line] = format!("{key}= {junk}");
            }
            1 => {
                let l = out[line].clone();
                out.insert(line, l);
            }
            2 => out[line] = junk,
            _ => return VALID[..cut].to_string(), // VALID is ASCII: every index is a char boundary
        }
        out.join("\n")
    })
}

fn check_config(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text) {
        Ok(config) => {
            // Whatever parsed must be usable without panicking.
            let _ = config.node_id();
            let _ = config.warnings();
            let _ = config.model.model_options();
        }
        Err(problems) => {
            prop_assert!(!problems.is_empty());
            for p in &problems {
                prop_assert!(!p.message.is_empty());
                let _ = p.position;
            }
        }
    }
    Ok(())
}

/// A small baseline JPEG (a gradient, so that a bad decode shows), and the end of its header (its SOS).
fn good_jpeg() -> &'static (Vec<u8>, usize) {
    static JPEG: std::sync::OnceLock<(Vec<u8>, usize)> = std::sync::OnceLock::new();
    JPEG.get_or_init(|| {
        let img = image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 128]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).expect("encodes");
        let sos = out.windows(2).position(|w| w == [0xff, 0xda]).expect("SOS");
        (out, sos)
    })
}

/// The good JPEG decoded by a fresh decoder: what every decode after a bad one must still give.
fn reference_pixels() -> &'static Vec<u8> {
    static PIXELS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PIXELS.get_or_init(|| {
        let mut p = Decoder::new();
        p.decode(Frame::Encoded(&good_jpeg().0)).expect("the good JPEG decodes");
        p.picture().expect("a picture").rgb.to_vec()
    })
}

/// The JPEG header cases: the bytes up to the start of scan with up to 4 bytes set, or cut short.
fn damaged_jpeg() -> impl Strategy<Value = Vec<u8>> {
    let (good, sos) = good_jpeg();
    let edits = prop::collection::vec((0..*sos + 12, any::<u8>()), 1..5);
    (edits, 0..4u8, 2..good.len()).prop_map(move |(edits, how, cut)| {
        let mut bad = good.clone();
        for (i, v) in edits {
            bad[i] = v;
        }
        if how == 0 {
            bad.truncate(cut);
        }
        bad
    })
}

thread_local! {
    /// One decoder for a whole run, as a camera's worker or an HTTP classify thread keeps one.
    static DECODER: std::cell::RefCell<Decoder> = std::cell::RefCell::new(Decoder::new());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// A damaged JPEG may fail or decode to anything, never panic, and the next good JPEG on the same
    /// decoder decodes to exactly what a fresh decoder gives (libjpeg-turbo 2.x handles were left broken).
    #[test]
    fn a_damaged_jpeg_never_spoils_the_next(bad in damaged_jpeg()) {
        DECODER.with_borrow_mut(|decoder| {
            let _ = decoder.decode(Frame::Encoded(&bad));
            let decoded = decoder.decode(Frame::Encoded(&good_jpeg().0));
            prop_assert!(decoded.is_ok(), "after {:02x?}: {:?}", &bad[..bad.len().min(200)], decoded);
            let picture = decoder.picture().expect("a picture");
            prop_assert!(picture.rgb == reference_pixels().as_slice(), "different pixels after a damaged JPEG");
            Ok(())
        })?;
    }

    #[test]
    fn config_files_never_panic(text in prop_oneof![tomlish(), mutated()]) {
        check_config(&text)?;
    }

    #[test]
    fn command_payloads_never_panic(payload in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        "(reload|snapshot)( [ -~]{0,80})?".prop_map(String::into_bytes),
        "\\{\"command\": ?\"(reload|snapshot|x)\"(, ?\"camera\": ?\"[ -~]{0,70}\")?\\}".prop_map(String::into_bytes),
    ]) {
        match command::parse(&payload) {
            Ok(command::Command::Snapshot { camera: Some(c) }) => {
                prop_assert!(!c.is_empty() && !c.contains(['/', '+', '#']));
            }
            Ok(_) => prop_assert!(payload.len() <= command::MAX_PAYLOAD),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn the_fuzz_seed_is_itself_valid() {
    // Otherwise the mutations would start from an already broken file and prove less.
    Config::parse(VALID).map(|_| ()).unwrap_or_else(|p| panic!("{p:?}"));
}
