# The image of every MuckWatch service (docker-compose.yml): collector, scheduler, web,
# migrations, broker accounts. Pinned base image; dependencies pinned in requirements.txt.
FROM python:3.11.11-slim-bookworm
WORKDIR /app
# Evidence packs (WeasyPrint): Pango and the Noto CJK fonts, which the slim image lacks;
# openssl for `muck broker cert`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
       fontconfig fonts-noto-cjk openssl \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# Named volumes take the owner of these folders on first use: the one-shot services write
# the broker's files there as this user, and the broker (its own user) reads them.
# The PDF documents' fast CJK font (core/cjk_fonts.py), built as root into /usr/local/share/fonts.
RUN pip install --no-cache-dir --no-deps . \
    && python -m core.cjk_fonts \
    && useradd --system --uid 10001 muck \
    && mkdir -p /mosquitto/auth /mosquitto/certs \
    && chown muck /mosquitto/auth /mosquitto/certs
USER muck
EXPOSE 8000 9103 9108 9109
CMD ["muck", "--help"]
