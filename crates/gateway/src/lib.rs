//! Veil's OpenAI-compatible HTTP gateway on the user's machine: chat completions and models, sealed to an attested worker through veil-client.
//!
//! `POST /v1/chat/completions` (whole answers, and server-sent events exactly as OpenAI sends them) and
//! `GET /v1/models`, with OpenAI-style error bodies. Every response says how the worker was attested
//! in the `x-veil-attestation` header: `simulated` (development TEE, accepted only because the policy
//! allows it) or `verified`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod openai;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use tokio::sync::oneshot;
use veil_client::{ClientConfig, WorkerClient};

/// What can go wrong starting a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Client(#[from] veil_client::ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the gateway stopped: {0}")]
    Server(String),
}

/// Result alias for this crate.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// The header that tells how the worker behind a response was attested.
pub const ATTESTATION_HEADER: &str = "x-veil-attestation";

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen (default `127.0.0.1:0`); keep it on loopback: the gateway speaks plaintext.
    pub listen: SocketAddr,
    /// The worker's base URL (later: discovered on the ledger).
    pub worker_url: String,
    /// How workers are trusted.
    pub client: ClientConfig,
}

/// An OpenAI-compatible gateway in front of one attested worker.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) client: Arc<WorkerClient>,
}

impl Gateway {
    pub fn new(worker_url: &str, client: ClientConfig) -> Result<Self> {
        Ok(Self {
            client: Arc::new(WorkerClient::new(worker_url, client)?),
        })
    }

    /// The worker client (attestation cache included).
    pub fn client(&self) -> &WorkerClient {
        &self.client
    }

    /// The OpenAI routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/v1/models", get(openai::models))
            .route("/v1/models/{id}", get(openai::model))
            .fallback(openai::not_found)
            .with_state(self.clone())
    }

    /// Binds `listen` and serves on a background task of the current tokio runtime.
    pub async fn start(&self, listen: SocketAddr) -> Result<RunningGateway> {
        let err = |source| GatewayError::Listen {
            addr: listen.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        let (tx, rx) = oneshot::channel::<()>();
        // Every server-sent event is a small write that should leave at once: no Nagle delay.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        tracing::info!(%addr, worker = %self.client.url(), "gateway listening");
        Ok(RunningGateway {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

/// A gateway serving on a background task; [`RunningGateway::stop`] (or dropping it) stops it.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait_task().await
    }

    /// Waits until the server ends.
    pub async fn wait(mut self) -> Result<()> {
        self.wait_task().await
    }

    async fn wait_task(&mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| GatewayError::Server(e.to_string()))?
                .map_err(|e| GatewayError::Server(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
