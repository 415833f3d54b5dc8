//! Cost of the durable event queue on this machine's disk: `cargo bench --bench queue`.
//!
//! Every event is pushed (fsync'd, one commit per batch), read back to be sent, and removed when its PUBACK
//! arrives (non-durable commit, made durable at least once a second). Prints per-operation medians and the
//! events/s one publisher can push through at each batch size — the ceiling the queue puts on `every_frame`.

use std::time::{Duration, Instant};

use camclassd::publish::{Limits, Queue};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Under target/, on the same disk as a real state directory would be (not a tmpfs).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let mut queue = Queue::open(&dir.path().join("bench.redb"), Limits { max_events: 100_000, max_bytes: 64 << 20 })?;
    let payload = vec![b'x'; 520]; // a typical event: top-5, timings, model hash
    let iterations = std::env::var("BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    println!("| batch | push (fsync) | read | remove | events/s through push+read+remove |");
    println!("|---|---|---|---|---|");
    for batch in [1usize, 8, 32] {
        let items: Vec<(String, Vec<u8>)> =
            (0..batch).map(|_| ("camclassd/node/porch/event".to_string(), payload.clone())).collect();
        let (mut push, mut read, mut remove) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iterations {
            let t = Instant::now();
            queue.push(&items)?;
            push.push(t.elapsed());
            let t = Instant::now();
            let records = queue.read_from(queue.first_id(), batch)?;
            read.push(t.elapsed());
            let ids: Vec<u64> = records.iter().map(|r| r.id).collect();
            let t = Instant::now();
            queue.remove(&ids)?;
            remove.push(t.elapsed());
        }
        let (p, r, d) = (median(push), median(read), median(remove));
        let per_batch = (p + r + d).as_secs_f64();
        println!(
            "| {batch} | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} |",
            p.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3,
            d.as_secs_f64() * 1e3,
            batch as f64 / per_batch
        );
    }
    println!("\n{iterations} iterations per row, medians; {}-byte events.", payload.len());
    Ok(())
}
