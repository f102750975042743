//! Independent implementations in Python, installed by the tests themselves into a cached venv
//! (`$RP_NOTIFIER_TEST_VENV`, else `$XDG_CACHE_HOME/release-pilot/notifier-test-venv`, else
//! `~/.cache/…`): `standardwebhooks` (the Standard Webhooks reference library) verifies our
//! signatures, `aiosmtpd` receives our e-mail. A missing Python or a failed install fails the
//! test loudly; nothing is skipped.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, Command},
    sync::OnceCell,
};

const PACKAGES: [&str; 2] = ["standardwebhooks==1.1.0", "aiosmtpd==1.4.6"];

fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RP_NOTIFIER_TEST_VENV") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("release-pilot").join("notifier-test-venv")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support").join(name)
}

async fn run(command: &mut Command, what: &str) {
    let output = command.output().await.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The venv's python, with the packages installed (once per test process).
pub async fn python() -> PathBuf {
    static READY: OnceCell<PathBuf> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let dir = venv_dir();
            let python = dir.join("bin").join("python");
            if !python.exists() {
                run(
                    Command::new("python3").args(["-m", "venv"]).arg(&dir),
                    "python3 -m venv (install python3-venv)",
                )
                .await;
            }
            let probe = Command::new(&python)
                .args(["-c", "import standardwebhooks, aiosmtpd"])
                .output()
                .await
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !probe {
                run(
                    Command::new(&python)
                        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                        .args(PACKAGES),
                    "pip install standardwebhooks aiosmtpd",
                )
                .await;
            }
            python
        })
        .await
        .clone()
}

/// Verifies a Standard Webhooks signature with the Python reference library.
pub async fn verify_signature(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
) -> Result<(), String> {
    let python = python().await;
    let mut child = Command::new(python)
        .arg(script("verify_signature.py"))
        .args([secret, id, timestamp, signature])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().expect("stdin").write_all(body).await.expect("write body");
    let output = child.wait_with_output().await.expect("python finishes");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() && said.trim() == "verified" { Ok(()) } else { Err(said) }
}

/// An aiosmtpd server on a free port, collecting the messages it receives.
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<serde_json::Value>>>,
    _child: Child,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let python = python().await;
        let port = rp_test_support::free_port();
        let mut child = Command::new(python)
            .arg(script("smtp_sink.py"))
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the SMTP sink starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP sink is ready within 30 s")
            .expect("the SMTP sink prints")
            .expect("the SMTP sink says READY");
        assert_eq!(ready, "READY");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let collected = messages.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(value) = serde_json::from_str(&line) {
                    collected.lock().unwrap().push(value);
                }
            }
        });
        Self { port, messages, _child: child }
    }

    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.messages.lock().unwrap().clone()
    }
}
