//! Where the services are, and who we are: endpoints, stored credentials (refreshed when the
//! access token expires), or an API token from the environment for CI.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use rp_proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    notifier::v1::notifier_service_client::NotifierServiceClient,
    release::v1::release_service_client::ReleaseServiceClient,
};
use serde::{Deserialize, Serialize};
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// Connection settings from flags and environment.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Host running Release Pilot; the default ports of auth (50051) and release (50052) are used.
    #[arg(long, global = true, env = "RPCTL_SERVER", default_value = "127.0.0.1")]
    pub server: String,
    /// Full URL of the auth service (overrides --server).
    #[arg(long, global = true, env = "RPCTL_AUTH_ENDPOINT")]
    pub auth_endpoint: Option<String>,
    /// Full URL of the release service (overrides --server).
    #[arg(long, global = true, env = "RPCTL_RELEASE_ENDPOINT")]
    pub release_endpoint: Option<String>,
    /// Full URL of the notifier (overrides --server; default port 50054).
    #[arg(long, global = true, env = "RPCTL_NOTIFIER_ENDPOINT")]
    pub notifier_endpoint: Option<String>,
    /// An API token (`rp_…`) or access token to use instead of the stored login (for CI).
    #[arg(long, global = true, env = "RPCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the login is stored (default: $XDG_CONFIG_HOME/rpctl/credentials.json).
    #[arg(long, global = true, env = "RPCTL_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
}

impl Connection {
    fn url(explicit: &Option<String>, server: &str, port: u16) -> String {
        match explicit {
            Some(url) => url.clone(),
            None if server.starts_with("http://") || server.starts_with("https://") => {
                format!("{}:{port}", server.trim_end_matches('/'))
            }
            None => format!("http://{server}:{port}"),
        }
    }

    pub fn auth_url(&self) -> String {
        Self::url(&self.auth_endpoint, &self.server, 50051)
    }

    pub fn release_url(&self) -> String {
        Self::url(&self.release_endpoint, &self.server, 50052)
    }

    pub fn notifier_url(&self) -> String {
        Self::url(&self.notifier_endpoint, &self.server, 50054)
    }

    pub fn credentials_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.credentials {
            return Ok(path.clone());
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set; use --credentials")?)
                .join(".config"),
        };
        Ok(base.join("rpctl").join("credentials.json"))
    }
}

/// A stored login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub auth_endpoint: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a valid endpoint"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}"))
}

pub async fn auth_client(connection: &Connection) -> anyhow::Result<AuthServiceClient<Channel>> {
    Ok(AuthServiceClient::new(channel(&connection.auth_url()).await?))
}

pub async fn release_client(connection: &Connection) -> anyhow::Result<ReleaseServiceClient<Channel>> {
    Ok(ReleaseServiceClient::new(channel(&connection.release_url()).await?))
}

pub async fn notifier_client(connection: &Connection) -> anyhow::Result<NotifierServiceClient<Channel>> {
    Ok(NotifierServiceClient::new(channel(&connection.notifier_url()).await?))
}

/// Logs in and stores the tokens (file mode 0600).
pub async fn login(connection: &Connection, email: &str, password: &str) -> anyhow::Result<Credentials> {
    let pair = auth_client(connection)
        .await?
        .login(auth_pb::LoginRequest { email: email.to_owned(), password: password.to_owned() })
        .await
        .map_err(crate::status_error)?
        .into_inner();
    let credentials = Credentials {
        auth_endpoint: connection.auth_url(),
        email: email.to_owned(),
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        expires_at: unix_now() + pair.expires_in.max(0) as u64,
    };
    save(connection, &credentials)?;
    Ok(credentials)
}

fn save(connection: &Connection, credentials: &Credentials) -> anyhow::Result<()> {
    let path = connection.credentials_path()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(credentials)?;
    #[cfg(unix)]
    {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(text.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, text)?;
    Ok(())
}

/// Forgets the stored login (and revokes its refresh tokens).
pub async fn logout(connection: &Connection) -> anyhow::Result<()> {
    let path = connection.credentials_path()?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(credentials) = serde_json::from_str::<Credentials>(&text)
            && let Ok(mut client) = auth_client(connection).await
        {
            let _ = client.logout(auth_pb::LogoutRequest { refresh_token: credentials.refresh_token }).await;
        }
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// The bearer token to send: `--token`/`RPCTL_TOKEN`, else the stored login, refreshed if it
/// expires within a minute.
pub async fn bearer(connection: &Connection) -> anyhow::Result<String> {
    if let Some(token) = &connection.token {
        return Ok(token.clone());
    }
    let path = connection.credentials_path()?;
    let text = std::fs::read_to_string(&path)
        .map_err(|_| anyhow::anyhow!("not logged in: run `rpctl login` (or set RPCTL_TOKEN)"))?;
    let mut credentials: Credentials =
        serde_json::from_str(&text).context("the stored credentials are unreadable; run `rpctl login`")?;
    if credentials.expires_at <= unix_now() + 60 {
        let pair = auth_client(connection)
            .await?
            .refresh(auth_pb::RefreshRequest { refresh_token: credentials.refresh_token.clone() })
            .await;
        let pair = match pair {
            Ok(pair) => pair.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                bail!("the login has expired: run `rpctl login`")
            }
            Err(status) => return Err(crate::status_error(status)),
        };
        credentials.access_token = pair.access_token;
        credentials.refresh_token = pair.refresh_token;
        credentials.expires_at = unix_now() + pair.expires_in.max(0) as u64;
        save(connection, &credentials)?;
    }
    Ok(credentials.access_token)
}

/// A request carrying the bearer token.
pub fn authed<T>(token: &str, body: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(body);
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .context("the token is not a valid header value")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
