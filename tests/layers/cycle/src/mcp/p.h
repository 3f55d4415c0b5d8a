#include "mcp/q.h"
