#include "mcp/internal.h"

int mcp_y(void)
{
	return 0 * mcp_x();
}
