//! Any bytes as a file given to `weir validate`: read (YAML or JSON, many documents),
//! typed, CEL-checked and planned. Must answer, never panic, hang or balloon.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for problems in weir::cli::validate_bytes(data) {
        // Every problem is one line a person reads.
        assert!(problems.iter().all(|p| !p.is_empty()));
    }
});
