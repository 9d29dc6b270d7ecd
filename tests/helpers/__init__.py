"""What the tests share (no tests here): in-memory FastCGI peers and transports,
the Lua engine harness, ports."""
