# One image for every service; heavy services add their extra (e.g. --build-arg EXTRAS=sentiment).
FROM python:3.11-slim AS base
ARG EXTRAS="ml,ib"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY proto ./proto
COPY libs ./libs
COPY services ./services
COPY tradefleet ./tradefleet
COPY models ./models
# torch comes from PyTorch's CPU index first (PyPI's default Linux wheel pulls CUDA); only images
# with the sentiment extra need it.
RUN case ",${EXTRAS}," in *,sentiment,*) pip install --no-cache-dir \
        --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 ;; esac \
    && pip install --no-cache-dir -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
    && useradd --system --uid 10001 tradefleet
COPY data/sample ./data/sample
COPY data/sentiment ./data/sentiment
USER tradefleet
ENV TRADEFLEET_HTTP__HOST=0.0.0.0 TRADEFLEET_HTTP__PORT=9100 TRADEFLEET_TELEMETRY__LOG_FORMAT=json \
    TRADEFLEET_FASTLANE__COMPILE_CACHE=/tmp/lleaves-cache TRADEFLEET_MARKET__CACHE=/tmp/calendar-cache
EXPOSE 9100
ENTRYPOINT ["tradefleet"]
CMD ["--help"]
