//! E-mail over SMTP (lettre): plain text and HTML alternatives, `Message-ID` derived from the
//! delivery id so a duplicate is recognisable. The SMTP host is checked by the SSRF guard and
//! the connection goes to the checked address (TLS still verifies the host name).

use std::{net::SocketAddr, time::Duration, time::Instant};

use ipnet::IpNet;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use serde_json::Value;

use super::{Answer, Message, Resolved, SendError};
use crate::domain::ssrf;

/// `none` (plain SMTP, e.g. a local relay), `starttls` (default) or `tls` (implicit, port 465).
fn tls_mode(config: &Value) -> &str {
    config.get("tls").and_then(Value::as_str).unwrap_or("starttls")
}

fn port(config: &Value) -> u16 {
    match config.get("smtp_port").and_then(Value::as_u64) {
        Some(port) => port as u16,
        None => match tls_mode(config) {
            "none" => 25,
            "tls" => 465,
            _ => 587,
        },
    }
}

fn recipients(config: &Value) -> Vec<String> {
    match config.get("to") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(list)) => {
            list.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
        }
        _ => Vec::new(),
    }
}

/// Checks the e-mail settings.
pub fn validate(config: &Value) -> Result<(), String> {
    if !matches!(tls_mode(config), "none" | "starttls" | "tls") {
        return Err("tls must be none, starttls or tls".into());
    }
    if let Some(port) = config.get("smtp_port")
        && !port.as_u64().is_some_and(|p| (1..=65535).contains(&p))
    {
        return Err("smtp_port must be a port number".into());
    }
    let from = config.get("from").and_then(Value::as_str).unwrap_or_default();
    from.parse::<Mailbox>().map_err(|e| format!("from {from:?}: {e}"))?;
    let to = recipients(config);
    if to.is_empty() {
        return Err("to must list at least one address".into());
    }
    for address in to {
        address.parse::<Mailbox>().map_err(|e| format!("to {address:?}: {e}"))?;
    }
    Ok(())
}

pub async fn send(
    allowed: &[IpNet],
    timeout: Duration,
    channel: &Resolved,
    message: &Message,
) -> Result<Answer, SendError> {
    let config = &channel.config;
    let host = channel.setting("smtp_host").ok_or_else(|| SendError::Permanent("no smtp_host".into()))?;
    let port = port(config);
    let address = resolve(host, port, allowed).await?;
    let subject = message.render(channel, "subject")?;
    let text = message.render(channel, "text")?;
    let html = message.render(channel, "html")?;
    let bad = |e: &dyn std::fmt::Display| SendError::Permanent(e.to_string());
    let from: Mailbox = channel.setting("from").unwrap_or_default().parse().map_err(|e| bad(&e))?;
    let mut builder = Email::builder()
        .from(from)
        .subject(subject.replace(['\r', '\n'], " "))
        .message_id(Some(format!("<{}@release-pilot.notifier>", message.delivery_id)));
    for to in recipients(config) {
        builder = builder.to(to.parse::<Mailbox>().map_err(|e| bad(&e))?);
    }
    let email = builder.multipart(MultiPart::alternative_plain_html(text, html)).map_err(|e| bad(&e))?;

    let tls = match tls_mode(config) {
        "none" => Tls::None,
        mode => {
            let parameters = TlsParameters::new(host.to_owned()).map_err(|e| bad(&e))?;
            if mode == "tls" { Tls::Wrapper(parameters) } else { Tls::Required(parameters) }
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.ip().to_string())
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(username) = channel.setting("username") {
        let password = channel.secrets.get("smtp_password").cloned().unwrap_or_default();
        transport = transport.credentials(Credentials::new(username.to_owned(), password));
    }
    let transport = transport.build();
    let started = Instant::now();
    match transport.send(email).await {
        Ok(response) => Ok(Answer {
            status_code: u16::from(response.code()),
            excerpt: response.message().collect::<Vec<_>>().join(" "),
            retry_after: None,
            latency: started.elapsed(),
        }),
        Err(err) => match err.status() {
            // The server answered with an error code: a failed attempt with that code.
            Some(code) => Ok(Answer {
                status_code: u16::from(code),
                excerpt: err.to_string(),
                retry_after: None,
                latency: started.elapsed(),
            }),
            None => Err(SendError::Transient(format!("smtp: {err}"))),
        },
    }
}

async fn resolve(host: &str, port: u16, allowed: &[IpNet]) -> Result<SocketAddr, SendError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| SendError::Transient(format!("{host} does not resolve: {e}")))?
        .collect();
    let mut refusal = None;
    for addr in addrs {
        match ssrf::check(addr.ip(), allowed) {
            Ok(()) => return Ok(addr),
            Err(reason) => refusal = Some(reason),
        }
    }
    Err(match refusal {
        Some(reason) => SendError::Refused(format!("{host}: {reason}")),
        None => SendError::Transient(format!("{host} does not resolve")),
    })
}
