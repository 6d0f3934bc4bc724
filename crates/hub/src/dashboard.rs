//! The dashboard: server-rendered HTML, no script and no build step. `/` is the network, `/nodes/{id}`
//! a node, `/stack` a Stack's own figures behind its API key (posted in a form, never in a URL).
//! Pages refresh themselves every [`REFRESH_S`] seconds; the plots are SVG drawn here.
//!
//! Request figures come from the per-minute rollups in the database ([`crate::rollup`]), so every
//! replica shows the same; what is live (nodes connected, queues, the log) is this hub's now. Every
//! string that came from outside (model names, injection and skill names, errors) is escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use stacknet_ledger::AccountId;
use stacknet_protocol::{Amount, NodeKeyId, Timestamp};

use crate::error::ApiError;
use crate::rollup::{minute_of, Totals};
use crate::store::UsageRow;
use crate::AppState;

/// How often a page reloads itself.
pub const REFRESH_S: u32 = 10;
/// The windows the network page reports, in minutes.
const WINDOWS: [(&str, i64); 3] = [("5 minutes", 5), ("1 hour", 60), ("1 day", 1_440)];
/// How far back a Stack's page shows its spend, in days.
const STACK_DAYS: i64 = 30;

/// Escapes text for HTML (content and quoted attributes).
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#1b1f24;color:#fff;padding:.7em 1.5em}header a{color:#fff;margin-right:1.2em;text-decoration:none}\
main{padding:1em 1.5em;max-width:72em}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
.tiles{display:flex;flex-wrap:wrap;gap:.8em}.tile{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:.6em 1em;min-width:9em}\
.tile b{display:block;font-size:1.6em}table{border-collapse:collapse;background:#fff}\
td,th{border:1px solid #d9dde3;padding:.3em .7em;text-align:left}th{background:#eef0f3}\
svg{background:#fff;border:1px solid #d9dde3;border-radius:6px}.err{color:#b3261e}code{font-size:.9em}";

/// A whole page around `body`.
fn page(title: &str, body: &str, refresh: bool) -> Html<String> {
    let refresh = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">")
    } else {
        String::new()
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">{refresh}<title>{} · Stacknet</title>\
         <style>{STYLE}</style></head><body><header><a href=\"/\"><b>Stacknet</b></a>\
         <a href=\"/\">Network</a><a href=\"/stack\">Your Stack</a></header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn tile(id: &str, label: &str, value: &str) -> String {
    format!(
        "<div class=\"tile\"><b id=\"{id}\">{}</b>{}</div>",
        esc(value),
        esc(label)
    )
}

fn ms(q: Option<Option<u64>>) -> String {
    match q {
        None => "–".to_owned(),
        Some(Some(bound)) => format!("≤ {bound} ms"),
        Some(None) => "> 10 s".to_owned(),
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// A line plot of `points` (one value per minute, oldest first) as SVG; `id` names it for tests.
fn plot(id: &str, title: &str, unit: &str, points: &[f64]) -> String {
    let (w, h, pad) = (640.0, 160.0, 28.0);
    let max = points.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let step = (w - 2.0 * pad) / (points.len().max(2) - 1) as f64;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = pad + step * i as f64;
            let y = h - pad - (v / max) * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<figure><figcaption>{}</figcaption><svg id=\"{id}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#9aa3ad\"/>\
         <text x=\"4\" y=\"{pad}\" font-size=\"11\">{max:.0} {}</text><text x=\"4\" y=\"{y0}\" font-size=\"11\">0</text>\
         <text x=\"{pad}\" y=\"{h2}\" font-size=\"11\">-{} min</text><text x=\"{x2}\" y=\"{h2}\" font-size=\"11\">now</text>\
         <polyline fill=\"none\" stroke=\"#2962ff\" stroke-width=\"2\" points=\"{}\"/></svg></figure>",
        esc(title),
        esc(title),
        esc(unit),
        points.len(),
        line.join(" "),
        y0 = h - pad,
        x1 = w - pad,
        x2 = w - pad - 20.0,
        h2 = h - 8.0,
    )
}

/// Each minute's totals over the last `minutes` up to `now`, oldest first.
fn per_minute(rows: &[UsageRow], now: i64, minutes: i64) -> Vec<Totals> {
    let mut by: BTreeMap<i64, Totals> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.minute > now - minutes) {
        by.entry(r.minute).or_default().add(&r.counts);
    }
    (now - minutes + 1..=now)
        .map(|m| by.remove(&m).unwrap_or_default())
        .collect()
}

/// The requests of each minute of `per_minute`, as a plot's points.
fn requests(per_minute: &[Totals]) -> Vec<f64> {
    per_minute.iter().map(|t| t.requests as f64).collect()
}

/// The rollups of the last `minutes` (of one Stack's tasks when `stack` is given), with this
/// hub's waiting ones stored first.
async fn rollups(
    state: &AppState,
    minutes: i64,
    stack: Option<stacknet_protocol::StackId>,
) -> Result<(i64, Vec<UsageRow>), ApiError> {
    state
        .rollups
        .flush(&*state.store)
        .await
        .map_err(ApiError::internal)?;
    let now = minute_of(Timestamp::now());
    let rows = state
        .store
        .usage_since(now - minutes + 1, stack)
        .await
        .map_err(ApiError::internal)?;
    Ok((now, rows))
}

/// `GET /`: the network.
pub async fn network(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let (now, rows) = rollups(&state, 1_440, None).await?;
    let connected = state.nodes.connected();
    let models = state.nodes.served_models();
    let (size, root) = state.log.head();
    let last_5 = Totals::of(rows.iter().filter(|r| r.minute > now - 5));
    let mut body = String::from("<h1>The network</h1><div class=\"tiles\">");
    body += &tile("nodes-online", "nodes online", &connected.len().to_string());
    body += &tile("models-served", "models served", &models.len().to_string());
    body += &tile(
        "requests-5m",
        "requests, last 5 min",
        &last_5.requests.to_string(),
    );
    body += &tile(
        "tokens-per-s",
        "output tokens/s, last 5 min",
        &format!("{:.1}", last_5.output_tokens as f64 / 300.0),
    );
    body += &tile("log-size", "paperwork in the log", &size.to_string());
    body += "</div>";

    body += "<h2>Requests</h2><table id=\"windows\"><tr><th>window</th><th>requests</th><th>error rate</th>\
             <th>p50</th><th>p99</th><th>output tokens/s</th></tr>";
    for (name, minutes) in WINDOWS {
        let t = Totals::of(rows.iter().filter(|r| r.minute > now - minutes));
        let _ = write!(
            body,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            t.requests,
            percent(t.error_rate()),
            ms(t.quantile_ms(0.5)),
            ms(t.quantile_ms(0.99)),
            t.output_tokens as f64 / (minutes as f64 * 60.0)
        );
    }
    body += "</table>";
    let hour = per_minute(&rows, now, 60);
    body += &plot(
        "plot-requests",
        "Requests per minute, last hour",
        "req/min",
        &requests(&hour),
    );
    let p99: Vec<f64> = hour
        .iter()
        .map(|t| t.quantile_ms(0.99).map_or(0.0, |q| q.unwrap_or(10_000) as f64))
        .collect();
    body += &plot(
        "plot-p99",
        "p99 latency per minute, last hour (bucket bound)",
        "ms",
        &p99,
    );

    body += "<h2>Models</h2><table id=\"models\"><tr><th>model</th><th>nodes</th><th>free slots</th>\
             <th>queued</th><th>estimated wait</th><th>requests, 1 h</th></tr>";
    for model in &models {
        let a = state.nodes.availability(model);
        let hour = Totals::of(rows.iter().filter(|r| r.minute > now - 60 && &r.model == model));
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            esc(model),
            a.nodes,
            a.free_slots,
            a.slots,
            a.waiting,
            a.estimated_wait_ms,
            hour.requests
        );
    }
    body += "</table>";

    body += "<h2>Nodes online</h2><table id=\"nodes\"><tr><th>node</th><th>models</th><th>tasks now</th>\
             <th>reputation</th></tr>";
    for node in &connected {
        let names: Vec<String> = node.models.iter().map(|m| esc(&m.name)).collect();
        let score = state.nodes.reputation.score_of(&node.id);
        let _ = write!(
            body,
            "<tr><td><a href=\"/nodes/{id}\"><code>{id}</code></a></td><td>{}</td><td>{} of {}</td><td>{:.3}</td></tr>",
            names.join(", "),
            node.in_flight(),
            node.max_concurrency,
            score,
            id = node.id
        );
    }
    body += "</table>";
    let _ = write!(
        body,
        "<h2>The paperwork log</h2><p id=\"log\">{size} paperwork; root <code>{}</code> \
         (signed checkpoints: <code>GET /stacknet/v1/log/checkpoint</code>).</p>",
        hex::encode(root)
    );
    Ok(page("Network", &body, true))
}

/// `GET /nodes/{id}`: one node.
pub async fn node(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match node_page(state, id).await {
        Ok(html) => html.into_response(),
        Err(e) => error_page(e),
    }
}

async fn node_page(state: AppState, id: String) -> Result<Html<String>, ApiError> {
    let axum::Json(report) = crate::reputation::one(State(state.clone()), Path(id)).await?;
    let node: NodeKeyId = report.node_key;
    let (now, rows) = rollups(&state, 1_440, None).await?;
    let rows: Vec<UsageRow> = rows.into_iter().filter(|r| r.node_key == node).collect();
    let day = Totals::of(&rows);
    let earned = state
        .ledger
        .balance(AccountId::node(node))
        .await
        .map_err(ApiError::internal)?;
    let payouts = state.store.payouts_of(node).await.map_err(ApiError::internal)?;
    let mut body = format!("<h1>Node <code>{node}</code></h1><div class=\"tiles\">");
    body += &tile(
        "node-state",
        "state",
        match (report.connected, report.suspended) {
            (_, true) => "suspended",
            (true, false) => "online",
            (false, false) => "offline",
        },
    );
    body += &tile("node-score", "reputation", &format!("{:.3}", report.score));
    body += &tile("node-requests", "tasks, last day", &day.requests.to_string());
    body += &tile(
        "node-earnings",
        "earnings to redeem (micro-credits)",
        &earned.available().to_string(),
    );
    body += &tile(
        "node-bonded",
        "bonded (micro-credits)",
        &report.bonded.to_string(),
    );
    body += &tile("node-slashes", "slashes", &report.slashes.to_string());
    body += "</div>";
    let since = report
        .connected_since
        .map_or_else(|| "not connected".to_owned(), |t| format!("connected since {t}"));
    let models: Vec<String> = report.models.iter().map(|m| esc(&m.name)).collect();
    let warm: Vec<String> = report.ready.iter().map(|m| esc(m)).collect();
    let _ = write!(
        body,
        "<p>{}; serves {}; warm (loaded): {}; {} of {} slots busy; quality {:.3}, latency {:.3}{}.</p>",
        esc(&since),
        if models.is_empty() {
            "nothing now".to_owned()
        } else {
            models.join(", ")
        },
        if warm.is_empty() {
            "none".to_owned()
        } else {
            warm.join(", ")
        },
        report.in_flight,
        report.max_concurrency,
        report.components.quality,
        report.components.latency,
        if report.below_floor {
            " (below the routing floor)"
        } else {
            ""
        },
    );
    let _ = write!(
        body,
        "<p>Last day: {} tasks, error rate {}, p50 {}, p99 {}, {} output tokens.</p>",
        day.requests,
        percent(day.error_rate()),
        ms(day.quantile_ms(0.5)),
        ms(day.quantile_ms(0.99)),
        day.output_tokens
    );
    body += &plot(
        "plot-node-requests",
        "Tasks per minute, last hour",
        "tasks/min",
        &requests(&per_minute(&rows, now, 60)),
    );
    body += "<h2>Evidence (what its reputation is computed from)</h2><table id=\"evidence\"><tr><th>kind</th><th>count</th></tr>";
    for (kind, count) in &report.counts {
        let _ = write!(body, "<tr><td>{}</td><td>{count}</td></tr>", esc(kind));
    }
    body += "</table><h2>Payouts</h2><table id=\"payouts\"><tr><th>payout</th><th>amount</th><th>state</th><th>created</th></tr>";
    for p in &payouts {
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.id),
            p.amount,
            p.state.as_str(),
            p.created_at
        );
    }
    body += "</table>";
    Ok(page(&format!("Node {node}"), &body, true))
}

/// `GET /stack`: asks for the API key.
pub async fn stack_form() -> Html<String> {
    page("Your Stack", &stack_form_body(None), false)
}

fn stack_form_body(error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"err\" id=\"error\">{}</p>", esc(e))
    });
    format!(
        "<h1>Your Stack</h1>{error}<form method=\"post\" action=\"/stack\">\
         <label>API key <input type=\"password\" name=\"api_key\" id=\"api_key\" autocomplete=\"off\" required></label> \
         <button type=\"submit\" id=\"show\">Show</button></form>\
         <p>The key is sent in the form's body and not kept; the page is not stored.</p>"
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct KeyForm {
    api_key: String,
}

/// `POST /stack` (`api_key` in a form): the Stack's spend per model per day, its requests, its
/// injections and skills; a key that is not a live one gets the form again with a 401.
pub async fn stack(State(state): State<AppState>, axum::Form(form): axum::Form<KeyForm>) -> Response {
    let mut headers = HeaderMap::new();
    let caller = HeaderValue::from_str(&format!("Bearer {}", form.api_key.trim()))
        .map_err(|_| ApiError::InvalidKey)
        .and_then(|value| {
            headers.insert(axum::http::header::AUTHORIZATION, value);
            state.api_keys.caller(&headers)
        });
    let caller = match caller {
        Ok(c) => c,
        Err(e) => {
            let body = stack_form_body(Some(&e.to_string()));
            let mut response = page("Your Stack", &body, false).into_response();
            *response.status_mut() = e.status();
            return no_store(response);
        }
    };
    match stack_page(&state, caller.stack).await {
        Ok(html) => no_store(html.into_response()),
        Err(e) => error_page(e),
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

async fn stack_page(state: &AppState, stack: stacknet_protocol::StackId) -> Result<Html<String>, ApiError> {
    let (now, rows) = rollups(state, STACK_DAYS * 1_440, Some(stack)).await?;
    let balance = state
        .ledger
        .balance(AccountId::stack(stack))
        .await
        .map_err(ApiError::internal)?;
    let all = Totals::of(&rows);
    let mut body = format!("<h1>Stack <code>{stack}</code></h1><div class=\"tiles\">");
    body += &tile(
        "stack-balance",
        "balance available (micro-credits)",
        &balance.available().to_string(),
    );
    body += &tile(
        "stack-requests",
        &format!("requests, last {STACK_DAYS} days"),
        &all.requests.to_string(),
    );
    body += &tile(
        "stack-spend",
        &format!("spent, last {STACK_DAYS} days (micro-credits)"),
        &Amount::from_micros(i64::try_from(all.cost_micros).unwrap_or(i64::MAX)).to_string(),
    );
    body += "</div>";
    body += &plot(
        "plot-stack-requests",
        "Requests per minute, last hour",
        "req/min",
        &requests(&per_minute(&rows, now, 60)),
    );
    let mut by_day: BTreeMap<(i64, &str), Totals> = BTreeMap::new();
    for r in &rows {
        by_day
            .entry((r.minute.div_euclid(1_440), &r.model))
            .or_default()
            .add(&r.counts);
    }
    body += "<h2>Spend per model per day</h2><table id=\"spend\"><tr><th>day (UTC)</th><th>model</th>\
             <th>requests</th><th>errors</th><th>input tokens</th><th>output tokens</th><th>spent (micro-credits)</th></tr>";
    for ((day, model), t) in by_day.iter().rev() {
        let date =
            Timestamp::from_unix_ms(day * 86_400_000).map_or_else(|_| day.to_string(), |t| t.to_string());
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(date.get(..10).unwrap_or(&date)),
            esc(model),
            t.requests,
            t.errors,
            t.input_tokens,
            t.output_tokens,
            Amount::from_micros(i64::try_from(t.cost_micros).unwrap_or(i64::MAX))
        );
    }
    body += "</table><h2>Injections</h2><table id=\"injections\"><tr><th>name</th><th>version</th><th>system message</th><th>tools</th></tr>";
    for i in state.attribution.injections_of(stack) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.spec.name),
            i.version,
            esc(i.spec.system.as_deref().unwrap_or("")),
            i.spec.tools.len()
        );
    }
    body += "</table><h2>Skills it published</h2><table id=\"skills\"><tr><th>name</th><th>version</th><th>active</th></tr>";
    for s in state
        .attribution
        .skills()
        .into_iter()
        .filter(|s| s.creator == stack)
    {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.doc.spec.name),
            s.version,
            if s.doc.active { "yes" } else { "no" }
        );
    }
    body += "</table>";
    Ok(page(&format!("Stack {stack}"), &body, false))
}

/// An error as a page, with its status.
fn error_page(e: ApiError) -> Response {
    let status = e.status();
    let body = format!(
        "<h1>{}</h1><p class=\"err\" id=\"error\">{}</p>",
        status.as_u16(),
        esc(&e.to_string())
    );
    let mut response = page("Error", &body, false).into_response();
    *response.status_mut() = if status == StatusCode::OK {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    response
}
