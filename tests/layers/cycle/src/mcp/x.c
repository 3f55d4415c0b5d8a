#include "mcp/internal.h"

int mcp_x(void)
{
	return mcp_y() + 1;
}
