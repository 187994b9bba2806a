//! Any bytes as the admin's providers file (`--providers`): accepted or refused with a
//! message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = weir::admin::providers::Providers::from_yaml(text);
    }
});
