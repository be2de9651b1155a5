//! Criterion: the cost of issuing one device identity (key generation + signed certificate)
//! for every supported algorithm. RSA groups take fewer samples: one RSA-4096 key is ~1 s.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use thingswarm::identity::algorithm::ALL;
use thingswarm::identity::{device, Ca, DeviceWindow};

fn issue(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let window = DeviceWindow {
        not_before: 1_700_000_000,
        not_after: 1_900_000_000,
        serial_prefix: 7,
    };
    let mut group = c.benchmark_group("issue");
    for alg in ALL {
        let ca = Ca::generated(tmp.path(), alg, false).unwrap();
        if alg.per_core_per_sec() < 100.0 {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(15));
        } else {
            group
                .sample_size(50)
                .measurement_time(Duration::from_secs(3));
        }
        let mut index = 0;
        group.bench_function(alg.name(), |b| {
            b.iter(|| {
                index += 1;
                device::issue(ca.signer(), alg, &window, "bench-device-00001", index).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, issue);
criterion_main!(benches);
