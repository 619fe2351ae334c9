# syntax=docker/dockerfile:1
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
RUN npm ci --ignore-scripts && npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    SMTP_OAUTH_RELAY_CONFIG=/etc/smtp-oauth-relay/config.yaml
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json config.example.yaml ./
COPY fixtures ./fixtures
RUN mkdir -p /data /etc/smtp-oauth-relay && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 2525 9464
# Follows the config's http.host/http.port (a relay moved to 9465 is not "unhealthy").
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["node", "dist/src/cli/main.js", "health"]
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["serve"]
