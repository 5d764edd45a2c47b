//! A report as a few kinds of blocks, rendered once as Markdown (aligned, so it also reads as
//! terminal text) and once as one self-contained HTML page: the content is built once and the
//! two formats can never say different things.

use std::fmt::Write as _;

/// A report: a title and its blocks, in order.
#[derive(Clone, Debug, Default)]
pub struct Document {
    /// The page title and top heading.
    pub title: String,
    /// The content.
    pub blocks: Vec<Block>,
}

/// One piece of content.
#[derive(Clone, Debug)]
pub enum Block {
    /// A section heading (level 2) with an anchor id.
    Heading {
        /// Anchor for links.
        id: String,
        /// Text.
        text: String,
    },
    /// A paragraph.
    Paragraph(String),
    /// A bulleted list.
    List(Vec<String>),
    /// Named facts (machine, date, revision): a definition list.
    Facts(Vec<(String, String)>),
    /// A warning that must not be missed.
    Warning(String),
    /// A table; `emphasis` rows (the reference row) are set apart.
    Table {
        /// Column headings.
        head: Vec<String>,
        /// Cells.
        rows: Vec<Vec<String>>,
        /// Which rows are the reference.
        emphasis: Vec<bool>,
    },
    /// A plot: inline SVG in HTML, `plots/<id>.svg` in Markdown.
    Figure {
        /// Identifier (also the SVG's file stem).
        id: String,
        /// Caption.
        caption: String,
        /// The SVG document.
        svg: String,
    },
}

impl Document {
    /// Adds a block.
    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    /// Adds a heading.
    pub fn heading(&mut self, id: &str, text: &str) {
        self.push(Block::Heading {
            id: id.into(),
            text: text.into(),
        });
    }

    /// Adds a paragraph.
    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.push(Block::Paragraph(text.into()));
    }

    /// The figures, for writing beside the Markdown.
    pub fn figures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Figure { id, svg, .. } => Some((id.as_str(), svg.as_str())),
            _ => None,
        })
    }

    /// The Markdown of the blocks alone, without the title line: a table or section to
    /// splice into another document (the README's generated tables).
    pub fn markdown_body(&self) -> String {
        let markdown = self.markdown();
        let title = format!("# {}\n\n", self.title);
        markdown
            .strip_prefix(&title)
            .unwrap_or(&markdown)
            .to_owned()
    }

    /// Markdown, tables padded so the text reads in a terminal too.
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n", self.title);
        for block in &self.blocks {
            out.push('\n');
            match block {
                Block::Heading { text, .. } => {
                    let _ = writeln!(out, "## {text}");
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "{text}");
                }
                Block::List(items) => {
                    for item in items {
                        let _ = writeln!(out, "- {item}");
                    }
                }
                Block::Facts(facts) => {
                    for (name, value) in facts {
                        let _ = writeln!(out, "- **{name}**: {value}");
                    }
                }
                Block::Warning(text) => {
                    let _ = writeln!(out, "> **Warning:** {text}");
                }
                Block::Table {
                    head,
                    rows,
                    emphasis,
                } => out.push_str(&markdown_table(head, rows, emphasis)),
                Block::Figure { id, caption, .. } => {
                    let _ = writeln!(out, "![{caption}](plots/{id}.svg)\n\n*{caption}*");
                }
            }
        }
        out
    }

    /// One HTML page: inline CSS and SVG, no script, no external resource.
    pub fn html(&self) -> String {
        let mut body = String::new();
        let mut toc = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading { id, text } => {
                    let _ = writeln!(body, "<h2 id=\"{}\">{}</h2>", escape(id), escape(text));
                    let _ = write!(toc, "<a href=\"#{}\">{}</a> ", escape(id), escape(text));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(body, "<p>{}</p>", inline(text));
                }
                Block::List(items) => {
                    body.push_str("<ul>\n");
                    for item in items {
                        let _ = writeln!(body, "<li>{}</li>", inline(item));
                    }
                    body.push_str("</ul>\n");
                }
                Block::Facts(facts) => {
                    body.push_str("<dl class=\"facts\">\n");
                    for (name, value) in facts {
                        let _ =
                            writeln!(body, "<dt>{}</dt><dd>{}</dd>", escape(name), inline(value));
                    }
                    body.push_str("</dl>\n");
                }
                Block::Warning(text) => {
                    let _ = writeln!(
                        body,
                        "<p class=\"warning\"><strong>Warning:</strong> {}</p>",
                        inline(text)
                    );
                }
                Block::Table {
                    head,
                    rows,
                    emphasis,
                } => {
                    // Columns of figures are right-aligned, heading included; text reads from the left.
                    let numeric: Vec<bool> = (0..head.len())
                        .map(|i| {
                            !rows.is_empty()
                                && rows.iter().all(|r| r.get(i).is_none_or(|c| is_figure(c)))
                        })
                        .collect();
                    let align = |i: usize| if numeric[i] { " class=\"num\"" } else { "" };
                    body.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
                    for (i, cell) in head.iter().enumerate() {
                        let _ = write!(body, "<th{}>{}</th>", align(i), escape(cell));
                    }
                    body.push_str("</tr></thead>\n<tbody>\n");
                    for (row, strong) in rows.iter().zip(emphasis) {
                        body.push_str(if *strong {
                            "<tr class=\"reference\">"
                        } else {
                            "<tr>"
                        });
                        for (i, cell) in row.iter().enumerate() {
                            // Sentences wrap; figures stay on one line.
                            let class = if cell.len() > WRAP_AFTER {
                                " class=\"text\""
                            } else {
                                align(i)
                            };
                            let _ = write!(body, "<td{class}>{}</td>", inline(cell));
                        }
                        body.push_str("</tr>\n");
                    }
                    body.push_str("</tbody></table></div>\n");
                }
                Block::Figure { id, caption, svg } => {
                    let _ = writeln!(
                        body,
                        "<figure id=\"plot-{}\" class=\"plot\">{}<figcaption>{}</figcaption></figure>",
                        escape(id),
                        strip_xml_declaration(svg),
                        escape(caption)
                    );
                }
            }
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
             <h1>{title}</h1>\n<nav>{toc}</nav>\n{body}</main>\n</body>\n</html>\n",
            title = escape(&self.title),
        )
    }
}

/// Cells longer than this are sentences, and wrap.
const WRAP_AFTER: usize = 32;

/// A Markdown table with padded columns; reference rows in bold.
fn markdown_table(head: &[String], rows: &[Vec<String>], emphasis: &[bool]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .zip(emphasis)
        .map(|(row, strong)| {
            row.iter()
                .enumerate()
                .map(|(i, c)| {
                    let c = c.replace('|', "\\|");
                    if *strong && i == 0 {
                        format!("**{c}**")
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .chain([&head[i]])
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(1)
                .max(3)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(head);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// Whether a cell is a figure (a number, a duration, a share, a bound) rather than text.
fn is_figure(cell: &str) -> bool {
    cell.chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || "+-−≥–".contains(c))
}

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escapes text and turns the little Markdown it uses (`**bold**`, `` `code` ``) into HTML.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let escaped = escape(text);
    let mut bold = false;
    let mut code = false;
    let mut rest = escaped.as_str();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = after;
        } else if let Some(after) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = after;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // Close whatever the text left open, so one stray marker cannot break the page.
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// An SVG as plotters writes it, ready to inline (no XML declaration inside HTML).
fn strip_xml_declaration(svg: &str) -> &str {
    match svg.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map(|(_, svg)| svg.trim_start())
            .unwrap_or(svg),
        None => svg,
    }
}

/// The page's style: readable on a laptop, tables scroll sideways, plots scale, prints cleanly.
const STYLE: &str = "
body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2433;background:#fafbfc}
main{max-width:1180px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:8px 0 4px}
h2{font-size:19px;margin:36px 0 8px;padding-bottom:4px;border-bottom:1px solid #dde2ea}
nav{font-size:13px;margin-bottom:12px}nav a{margin-right:12px;color:#2757a3;text-decoration:none}
p,li{max-width:80ch}
code{font:13px ui-monospace,Menlo,monospace;background:#eef1f5;padding:1px 4px;border-radius:3px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;margin:8px 0}
th,td{padding:4px 10px;text-align:left;white-space:nowrap;border-bottom:1px solid #e6e9ef}
th.num,td.num{text-align:right}
th{background:#eef1f5;font-weight:600}
td.text{white-space:normal;text-align:left;min-width:14em;max-width:36em}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:14px}
dl.facts dt{font-weight:600;color:#56607a}dl.facts dd{margin:0}
tr.reference td{background:#f4f6f9;font-style:italic}
.warning{background:#fff4e5;border-left:4px solid #e69f00;padding:8px 12px}
figure.plot{margin:16px 0;background:#fff;border:1px solid #e6e9ef;padding:8px}
figure.plot svg{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#56607a;margin-top:4px}
@media print{body{background:#fff}main{max-width:none;padding:0}nav{display:none}
figure.plot,table{break-inside:avoid}.scroll{overflow:visible}}
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Text from results can never inject markup, and the inline markers become tags.
    #[test]
    fn escaping() {
        assert_eq!(
            inline("a <b> & **c** `d`"),
            "a &lt;b&gt; &amp; <strong>c</strong> <code>d</code>"
        );
        assert_eq!(inline("**open"), "<strong>open</strong>");
        assert_eq!(
            strip_xml_declaration("<?xml version=\"1.0\"?>\n<svg/>"),
            "<svg/>"
        );
    }

    /// Markdown tables are aligned and escape pipes.
    #[test]
    fn markdown_tables() {
        let table = markdown_table(
            &["a".into(), "bb".into()],
            &[vec!["x|y".into(), "1".into()]],
            &[true],
        );
        assert_eq!(
            table,
            "| a        | bb  |\n|----------|-----|\n| **x\\|y** | 1   |\n"
        );
    }
}
