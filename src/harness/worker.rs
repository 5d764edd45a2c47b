//! A child process of `pushbench run` (`pushbench worker`, hidden): reads its [`Job`] from
//! stdin, does it, and reports over the typed protocol on stdout. It also watches stdin: when the
//! parent goes away (exits, crashes, is killed), the pipe closes and the child exits at once
//! rather than serving or loading forever.

use std::io::Read as _;

use crate::protocol::{self, Job, Report};
use crate::serve::{self, Output};

use super::load::run_job;

/// Runs the job given on stdin.
pub async fn run() -> anyhow::Result<()> {
    let job = protocol::read_job(&mut std::io::stdin().lock())?;
    // The rest of stdin is only ever closed: that is the parent leaving.
    std::thread::spawn(|| {
        let mut rest = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut rest);
        eprintln!("pushbench worker: parent gone (stdin closed); exiting");
        std::process::exit(3);
    });
    match job {
        Job::Serve(options) => serve::run(*options, Output::Json).await,
        Job::Load(job) => {
            let part = run_job(&job, |subscribers, before, connected| {
                let _ = protocol::report(&Report::Connected {
                    subscribers,
                    before,
                    connected,
                });
            })
            .await?;
            protocol::report(&Report::Part(Box::new(part)))?;
            Ok(())
        }
    }
}
