//! The metric providers' credentials: what no watch brings. Read from the provider's
//! Secret in weir's own namespace and shared by every Rollout that uses the provider,
//! read again at most every `CREDENTIALS_MAX_AGE` (a rotated token is used within it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;

use crate::Error;
use crate::admin::providers::Provider;
use crate::edges::objects;
use crate::edges::prometheus::Auth;

pub const CREDENTIALS_MAX_AGE: Duration = Duration::from_secs(120);

/// A provider's credentials (or why there are none) and when they were read.
type Read = (Result<Auth, String>, Instant);

#[derive(Default)]
pub struct Credentials(Mutex<HashMap<String, Read>>);

impl Credentials {
    /// The credentials of `provider` (none for a provider without a Secret).
    pub async fn of(
        &self,
        client: &Client,
        provider: Option<&Provider>,
        secrets_ns: &str,
    ) -> Result<Result<Auth, String>, Error> {
        let Some(provider) = provider.filter(|p| p.secret.is_some()) else {
            return Ok(Ok(Auth::None));
        };
        let held = self.lock().get(&provider.name).cloned();
        if let Some((auth, _)) = held.filter(|(_, read)| read.elapsed() < CREDENTIALS_MAX_AGE) {
            return Ok(auth);
        }
        let auth = objects::provider_auth(client, Some(provider), secrets_ns).await?;
        self.lock()
            .insert(provider.name.clone(), (auth.clone(), Instant::now()));
        Ok(auth)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Read>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
