//! Everything weir reads or writes outside itself. `kubernetes` (the user's and the
//! canary's Deployments, status writes), `istio` (the traffic router), `prometheus`
//! (the metrics provider), `events` (Kubernetes Events), and outbound HTTP: `webhooks`
//! (gates a Rollout asks) and `notify` (messages to receivers), both through `outbound`.

pub mod events;
pub mod gateway;
pub mod istio;
pub mod kubernetes;
pub mod notify;
pub mod objects;
pub mod outbound;
pub mod prometheus;
pub mod routes;
pub mod webhooks;
