"""An MCP tool result as a Ghost tool result: text for the model, media described, errors marked.

The model sees text only. Text blocks pass through; an image, audio or binary resource becomes a
one-line description (its type and size), never its base64 data; structured content is given as
JSON when the server sent no text. The registry then cuts the whole to --tool-result-max-chars.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types

from ghost.tools.base import ToolResult

SUMMARY_CHARS = 80


def tool_result(ghost_name: str, result: mcp_types.CallToolResult) -> ToolResult:
    parts = [_block_text(block) for block in result.content]
    if not any(parts) and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False, default=str)]
    text = "\n".join(part for part in parts if part) or "(the tool returned nothing)"
    if result.is_error:
        return ToolResult(f"{ghost_name} reported an error: {text}", ok=False,
                          summary=f"{ghost_name}: error")
    return ToolResult(text, summary=f"{ghost_name}: {_first_line(text)}")


def _block_text(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
        return f"[{block.type}: {block.mime_type}, {_decoded_size(block.data):,} bytes, not shown]"
    if isinstance(block, mcp_types.EmbeddedResource):
        return _resource_text(block.resource)
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link: {block.uri} ({block.name}{', ' + block.mime_type if block.mime_type else ''})]"
    return f"[{getattr(block, 'type', 'unknown')} content, not shown]"


def _resource_text(resource: Any) -> str:
    if isinstance(resource, mcp_types.TextResourceContents):
        return f"[resource {resource.uri}]\n{resource.text}"
    mime = getattr(resource, "mime_type", None) or "binary"
    return f"[resource {resource.uri}: {mime}, {_decoded_size(getattr(resource, 'blob', '')):,} bytes, not shown]"


def _decoded_size(data: str) -> int:
    return len(data) * 3 // 4 - data[-2:].count("=")


def _first_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SUMMARY_CHARS else line[:SUMMARY_CHARS] + "…"
