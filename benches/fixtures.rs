//! Fixtures the benchmarks share (included by `#[path]`).

/// A 50 KB html email with 100 links (one in ten to another host), in table markup.
#[allow(dead_code)]
pub fn links_email() -> String {
    let mut html = String::from("<html><body><table>");
    for i in 0..100 {
        let host = if i % 10 == 0 { "cdn.partner.test" } else { "www.acme.test" };
        html.push_str(&format!(
            "<tr><td style=\"padding:8px;font-family:Arial\"><p>Item {i}: a line of copy about the product.</p>\
             <a href=\"https://{host}/p/{i}?utm_source=mail&amp;utm_medium=email\">See item {i}</a></td></tr>"
        ));
    }
    while html.len() < 50 * 1024 {
        html.push_str("<p>Filler paragraph to reach fifty kilobytes of realistic markup.</p>");
    }
    html.push_str("</table></body></html>");
    html
}
