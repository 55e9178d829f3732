"""Tools an LLM agent can call: ``@tool``, ``Tool``, ``ToolCall`` and the ``ToolManager``.

mesa-llm 0.3's module paths are the submodules: ``mesa_llm.tools.tool_decorator``
(``tool``), ``mesa_llm.tools.tool_manager`` (``ToolManager``) and
``mesa_llm.tools.inbuilt_tools`` (the built-in tools).
"""

from __future__ import annotations

from mesa_llm.tools.tool_decorator import Tool, ToolCall, tool
from mesa_llm.tools.tool_manager import ToolManager

__all__ = ["Tool", "ToolCall", "ToolManager", "tool"]
