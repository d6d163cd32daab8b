"""Each door with its real client: the seed endpoints, OpenAI, DashScope (HTTP and WebSocket), upstream's runtime
HTTP and gRPC APIs, Wyoming, the web page, CORS, the clients self-hosters use, the OpenAPI schema, API keys, and
every core error on every door."""
