"""The `<zs-meta>KEY</zs-meta>` template pass: request metadata written into HTML and XML pages from the tar.

It runs on a static file only when scripts set any metadata and the file's
type is HTML (`text/html`, with or without parameters) or exactly
`application/xml`. Each `<zs-meta>KEY</zs-meta>` becomes the metadata value of
the trimmed KEY ("" when unset); an opening tag without its closing tag is
copied through with the rest of the file, and a file that is not UTF-8 is
served unchanged. A templated page is a plain 200: no validators, no ranges.
"""

OPEN = "<zs-meta>"
CLOSE = "</zs-meta>"


def applies(content_type, metadata):
    """True when a static file of `content_type` goes through the template pass for this metadata."""
    return bool(metadata) and (
        content_type == "text/html" or content_type.startswith("text/html;") or content_type == "application/xml"
    )


def render(data, metadata):
    """`data` (bytes) with every <zs-meta> tag replaced by its metadata value; unchanged if not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    if OPEN not in text:
        return data
    parts = []
    position = 0
    while True:
        start = text.find(OPEN, position)
        if start < 0:
            break
        key_start = start + len(OPEN)
        end = text.find(CLOSE, key_start)
        if end < 0:
            break  # unterminated: the rest of the file is copied as it is
        parts.append(text[position:start])
        parts.append(metadata.get(text[key_start:end].strip(), ""))
        position = end + len(CLOSE)
    parts.append(text[position:])
    return "".join(parts).encode("utf-8")
