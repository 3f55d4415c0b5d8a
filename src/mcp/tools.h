/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox tools (sandbox_create, sandbox_exec, ...), each behind the
 * approval step (approval/gate.h) with MCP elicitation as its asker.  The
 * layer above session.h and elicit.h; dispatch.c calls it.
 */
#ifndef LG_MCP_TOOLS_H
#define LG_MCP_TOOLS_H

#include "mcp/session.h"

#include <jansson.h>
#include <stdbool.h>

/* tools/list: every tool with schema and annotations.  New reference. */
json_t *mcp_tools_list(void);
bool mcp_tool_exists(const char *name);
/*
 * tools/call on a worker thread: classify, ask a human if red, run, audit.
 * Returns the CallToolResult (new reference); never NULL.
 */
json_t *mcp_tools_call(struct mcp_session *ss, struct mcp_call *call);

#endif
