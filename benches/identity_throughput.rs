//! End-to-end identity throughput, printed as JSON: generate N identities into a fresh cache
//! on all cores, reload them, and grow the fleet by 1%.
//!
//! `cargo bench --bench identity_throughput -- [--count N] [--algorithm NAME]`
//! (defaults: 100,000 ecdsa-p256-sha256). Goal on 2 cores: 100,000 P-256 in <= 4 s wall,
//! reload in <= 1 s.

use std::time::Instant;

use thingswarm::identity::{cache, Algorithm, Fleet, FleetSpec};
use thingswarm::stats::rusage::usage;

fn main() {
    let mut count: u64 = 100_000;
    let mut algorithm = Algorithm::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => count = args.next().and_then(|v| v.parse().ok()).expect("--count N"),
            "--algorithm" => algorithm = args.next().expect("--algorithm NAME").parse().unwrap(),
            _ => {} // cargo bench passes --bench
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::new("bench-{index:06}").unwrap();
    spec.algorithm = algorithm;
    // The CA is created outside the timed region.
    spec.load_ca(tmp.path()).unwrap();

    let (cpu0, t0) = (usage().cpu, Instant::now());
    let (fleet, report) = cache::ensure(tmp.path(), &spec, count, false).unwrap();
    let (gen_wall, gen_cpu) = (t0.elapsed(), usage().cpu - cpu0);
    assert_eq!(report.generated, count);

    let mut reloads = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let again = Fleet::open(fleet.dir()).unwrap();
        reloads.push(t.elapsed().as_secs_f64());
        assert_eq!(again.len() as u64, count);
    }
    let grow = count / 100;
    let t = Instant::now();
    let (_, grown) = cache::ensure(tmp.path(), &spec, count + grow, false).unwrap();
    let grow_wall = t.elapsed().as_secs_f64();
    assert_eq!(grown.generated, grow);

    let bundle = std::fs::metadata(fleet.dir().join("identities.bin"))
        .unwrap()
        .len();
    println!(
        "{}",
        serde_json::json!({
            "bench": "identity_throughput",
            "algorithm": algorithm.name(),
            "count": count,
            "threads": rayon::current_num_threads(),
            "generate_wall_s": gen_wall.as_secs_f64(),
            "generate_cpu_s": gen_cpu.as_secs_f64(),
            "identities_per_s": count as f64 / gen_wall.as_secs_f64(),
            "cpu_us_per_identity": gen_cpu.as_secs_f64() * 1e6 / count as f64,
            "reload_s": reloads,
            "reload_best_s": reloads.iter().cloned().fold(f64::INFINITY, f64::min),
            "grow_by": grow,
            "grow_wall_s": grow_wall,
            "bundle_bytes": bundle,
            "max_rss_bytes": usage().max_rss_bytes,
        })
    );
}
