/* One header for two files that call each other: includes see no cycle. */
int mcp_x(void);
int mcp_y(void);
