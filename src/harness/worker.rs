//! A child process of `pushbench run` or of a server fleet (`pushbench worker`, hidden): reads
//! its [`Job`] from stdin, does it, and reports over the typed protocol on stdout. It keeps
//! reading stdin for the parent's later [`Command`]s; when the parent goes away (exits,
//! crashes, is killed), the pipe closes and the child exits at once rather than serving or
//! loading forever.

use std::io::BufRead as _;

use tokio::sync::mpsc;

use crate::protocol::{self, Command, Job, Report};
use crate::serve::{self, Output};

use super::load::run_job;

/// Runs the job given on stdin.
pub async fn run() -> anyhow::Result<()> {
    let job = protocol::read_job(&mut std::io::stdin().lock())?;
    let (commands, received) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match protocol::parse::<Command>(&line) {
                Ok(command) => {
                    let _ = commands.send(command);
                }
                Err(error) => {
                    eprintln!("pushbench worker: ignoring a line from the parent: {error}")
                }
            }
        }
        // The parent leaving closes the pipe.
        eprintln!("pushbench worker: parent gone (stdin closed); exiting");
        std::process::exit(3);
    });
    match job {
        Job::Serve(options) => serve::run(*options, Output::Json, Some(received)).await,
        Job::Load(job) => {
            let mut received = received;
            let on_connected = |subscribers, before, connected| {
                let _ = protocol::report(&Report::Connected {
                    subscribers,
                    before,
                    connected,
                });
            };
            // The parent lets the subscribers go once every worker's hold the stream.
            let all_holding = || async move {
                let _ = protocol::report(&Report::Holding);
                while let Some(command) = received.recv().await {
                    if matches!(command, Command::Release) {
                        break;
                    }
                }
            };
            let part = run_job(&job, on_connected, all_holding).await?;
            protocol::report(&Report::Part(Box::new(part)))?;
            Ok(())
        }
    }
}
