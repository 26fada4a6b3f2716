//! `veil gateway`: an OpenAI-compatible endpoint on this machine, sealing requests to an attested worker.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::worker::PolicyArgs;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The worker's base URL.
    #[arg(long, value_name = "URL")]
    pub worker: String,
    /// Address to listen on (keep it on loopback); port 0 lets the OS choose. The OpenAI base URL is
    /// printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let gateway = veil_gateway::Gateway::new(&args.worker, args.policy.client_config()?)?;
    match gateway.client().attest().await {
        Ok(w) if w.simulated() => eprintln!(
            "veil gateway: worker {} attested with SIMULATED evidence (development only); responses carry \
             x-veil-attestation: simulated",
            args.worker
        ),
        Ok(_) => eprintln!("veil gateway: worker {} attested", args.worker),
        Err(e) => {
            eprintln!("veil gateway: warning: {e}; requests will fail until the worker passes attestation")
        }
    }
    let running = gateway.start(args.listen).await?;
    {
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), "{}", running.base_url())?;
    }
    eprintln!(
        "veil gateway: OpenAI base URL {base}\n  curl {base}/chat/completions -H 'content-type: application/json' \
         -d '{{\"model\":\"smollm2\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is the capital of France?\"}}]}}'",
        base = running.base_url()
    );
    tokio::select! {
        r = running.wait() => { r?; }
        r = tokio::signal::ctrl_c() => {
            r.context("cannot wait for Ctrl-C")?;
            eprintln!("veil gateway: stopping");
        }
    }
    Ok(ExitCode::SUCCESS)
}
