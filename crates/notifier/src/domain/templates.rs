//! Message templates (minijinja). Each channel kind has defaults; a channel may override any of
//! them. Templates see the message context: `event` (the primary event), `events` (all of the
//! group, each with `id`, `type`, `subject`, `time`, `severity`, `summary`, `app`, `environment`,
//! `version`, `deployment_id`, `incident_id`, `url`, `data`), `count`, `severity`, `app`,
//! `environment`, `channel`, `dashboard_url`, `ack_url` and, for escalations, `escalation`
//! (`level`, `levels`, `name`, `policy`). E-mail HTML is HTML-escaped and Slack text is
//! mrkdwn-escaped automatically.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, Error, Output, State, Value};

use super::kind;

/// Template names a channel kind uses.
pub fn keys(channel_kind: &str) -> &'static [&'static str] {
    match channel_kind {
        kind::SLACK => &["title", "text"],
        kind::EMAIL => &["subject", "text", "html"],
        kind::PAGERDUTY => &["summary"],
        _ => &[],
    }
}

const SLACK_TITLE: &str = "{% if escalation %}[Escalation {{ escalation.level }}/{{ escalation.levels }}] {% endif %}\
{{ event.summary }}{% if count > 1 %} (+{{ count - 1 }} more){% endif %}";

const SLACK_TEXT: &str = "{% for e in events %}*{{ e.severity | upper }}* {{ e.summary }}\
{% if e.url %} · <{{ e.url }}|open>{% endif %}\n{% endfor %}\
{% if ack_url %}:rotating_light: Not handled yet? <{{ ack_url }}|Acknowledge> to stop the escalation.{% endif %}";

const EMAIL_SUBJECT: &str = "[{{ severity | upper }}]{% if escalation %} [escalation {{ escalation.level }}/{{ escalation.levels }}]{% endif %} \
{{ event.summary }}{% if count > 1 %} (+{{ count - 1 }} more){% endif %}";

const EMAIL_TEXT: &str = "{{ event.summary }}

{% for e in events %}- {{ e.time }}  [{{ e.severity }}] {{ e.type }}: {{ e.summary }}{% if e.url %}
  {{ e.url }}{% endif %}
{% endfor %}{% if ack_url %}
This is escalation level {{ escalation.level }} of {{ escalation.levels }} ({{ escalation.name }}).
Acknowledge it to stop further escalation: {{ ack_url }}
{% endif %}
--
Release Pilot {{ dashboard_url }}
";

const EMAIL_HTML: &str = r#"<!doctype html>
<html><body style="font-family: sans-serif">
<h2>{{ event.summary }}</h2>
{% if ack_url %}<p><strong>Escalation level {{ escalation.level }} of {{ escalation.levels }} ({{ escalation.name }}).</strong>
<a href="{{ ack_url }}">Acknowledge</a> to stop further escalation.</p>{% endif %}
<table cellpadding="4">
{% for e in events %}<tr><td>{{ e.time }}</td><td><strong>{{ e.severity }}</strong></td><td>{{ e.type }}</td>
<td>{% if e.url %}<a href="{{ e.url }}">{{ e.summary }}</a>{% else %}{{ e.summary }}{% endif %}</td></tr>
{% endfor %}</table>
<p style="color: #666">Release Pilot · <a href="{{ dashboard_url }}">{{ dashboard_url }}</a></p>
</body></html>
"#;

const PAGERDUTY_SUMMARY: &str = "{{ event.summary }}{% if count > 1 %} (+{{ count - 1 }} more){% endif %}";

/// The built-in template of `channel_kind` called `key`.
pub fn default_template(channel_kind: &str, key: &str) -> Option<&'static str> {
    match (channel_kind, key) {
        (kind::SLACK, "title") => Some(SLACK_TITLE),
        (kind::SLACK, "text") => Some(SLACK_TEXT),
        (kind::EMAIL, "subject") => Some(EMAIL_SUBJECT),
        (kind::EMAIL, "text") => Some(EMAIL_TEXT),
        (kind::EMAIL, "html") => Some(EMAIL_HTML),
        (kind::PAGERDUTY, "summary") => Some(PAGERDUTY_SUMMARY),
        _ => None,
    }
}

/// Slack mrkdwn needs `&`, `<` and `>` escaped in text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn slack_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(text) if !value.is_safe() => out
            .write_str(&slack_escape(text))
            .map_err(|_| Error::new(minijinja::ErrorKind::WriteFailure, "write")),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn environment(channel_kind: &str) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(
        |name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None },
    );
    if channel_kind == kind::SLACK {
        env.set_formatter(slack_formatter);
    }
    env
}

/// Checks a channel's overrides: known keys for its kind, templates that compile.
pub fn validate(channel_kind: &str, overrides: &BTreeMap<String, String>) -> Result<(), String> {
    let env = environment(channel_kind);
    for (key, source) in overrides {
        if !keys(channel_kind).contains(&key.as_str()) {
            return Err(format!(
                "{channel_kind} channels have no template {key:?} (they use: {})",
                keys(channel_kind).join(", ")
            ));
        }
        if source.len() > 64 * 1024 {
            return Err(format!("template {key:?} is longer than 64 KiB"));
        }
        env.template_from_named_str(template_name(key), source)
            .map_err(|e| format!("template {key:?}: {e}"))?;
    }
    Ok(())
}

fn template_name(key: &str) -> &'static str {
    match key {
        "html" => "message.html",
        _ => "message.txt",
    }
}

/// Renders template `key` of a channel of `channel_kind` (its override, else the default).
pub fn render(
    channel_kind: &str,
    overrides: &BTreeMap<String, String>,
    key: &str,
    context: &Value,
) -> Result<String, String> {
    let source = overrides
        .get(key)
        .map(String::as_str)
        .or_else(|| default_template(channel_kind, key))
        .ok_or_else(|| format!("{channel_kind} channels have no template {key:?}"))?;
    let env = environment(channel_kind);
    let template = env
        .template_from_named_str(template_name(key), source)
        .map_err(|e| format!("template {key:?}: {e}"))?;
    template.render(context).map(|text| text.trim().to_owned()).map_err(|e| format!("template {key:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context(escalation: bool) -> Value {
        let event = json!({"id": "e1", "type": "rp.deployment.failed", "severity": "high",
            "summary": "shop 2.0.0 in prod: deployment failed: <boom> & co", "time": "2026-11-27T10:00:00Z",
            "url": "https://rp.example/deployments/d1?a=1&b=2"});
        let mut ctx = json!({"event": event, "events": [event, event], "count": 2, "severity": "high",
            "dashboard_url": "https://rp.example", "ack_url": ""});
        if escalation {
            ctx["ack_url"] = json!("https://rp.example/ack/t");
            ctx["escalation"] = json!({"level": 2, "levels": 4, "name": "team lead e-mail"});
        }
        Value::from_serialize(&ctx)
    }

    #[test]
    fn defaults_render_for_every_kind() {
        let none = BTreeMap::new();
        let title = render(kind::SLACK, &none, "title", &context(false)).unwrap();
        assert_eq!(title, "shop 2.0.0 in prod: deployment failed: &lt;boom&gt; &amp; co (+1 more)");
        let text = render(kind::SLACK, &none, "text", &context(true)).unwrap();
        assert!(
            text.contains("*HIGH*") && text.contains("<https://rp.example/deployments/d1?a=1&amp;b=2|open>")
        );
        assert!(text.contains("<https://rp.example/ack/t|Acknowledge>"));
        let html = render(kind::EMAIL, &none, "html", &context(true)).unwrap();
        assert!(
            html.contains("&lt;boom&gt; &amp; co")
                && html.contains("href=\"https:&#x2f;&#x2f;rp.example&#x2f;ack&#x2f;t\"")
        );
        let plain = render(kind::EMAIL, &none, "text", &context(true)).unwrap();
        assert!(plain.contains("<boom> & co") && plain.contains("level 2 of 4 (team lead e-mail)"));
        let subject = render(kind::EMAIL, &none, "subject", &context(true)).unwrap();
        assert!(subject.starts_with("[HIGH] [escalation 2/4] shop"), "{subject}");
        assert!(render(kind::PAGERDUTY, &none, "summary", &context(false)).unwrap().ends_with("(+1 more)"));
    }

    #[test]
    fn overrides_are_validated_and_used() {
        let mut overrides = BTreeMap::new();
        overrides.insert("title".to_owned(), "{{ count }} events for {{ event.type }}".to_owned());
        assert!(validate(kind::SLACK, &overrides).is_ok());
        assert_eq!(
            render(kind::SLACK, &overrides, "title", &context(false)).unwrap(),
            "2 events for rp.deployment.failed"
        );
        overrides.insert("title".to_owned(), "{% if %}".to_owned());
        assert!(validate(kind::SLACK, &overrides).unwrap_err().contains("title"));
        let mut unknown = BTreeMap::new();
        unknown.insert("body".to_owned(), "x".to_owned());
        assert!(validate(kind::WEBHOOK, &unknown).is_err());
    }
}
