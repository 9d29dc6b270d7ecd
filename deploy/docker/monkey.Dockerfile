# The Monkey HTTP server 1.6.9 from Alpine's package (Alpine 3.11-3.16 ship
# it; 1.6 is the last line whose FastCGI plugin works: docs/monkey.md),
# for docker-compose.yml's `monkey` service, which mounts monkey_conf/ as
# /etc/monkey and runs `monkey -c /etc/monkey -p 2001`.
FROM alpine:3.16

RUN apk add --no-cache monkey=~1.6.9

# Monkey binds as root, then drops to monkey.conf's `User` (nobody).
EXPOSE 2001
STOPSIGNAL SIGTERM
CMD ["monkey", "-c", "/etc/monkey", "-p", "2001"]
