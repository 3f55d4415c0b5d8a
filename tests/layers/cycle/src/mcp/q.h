#include "mcp/p.h"
