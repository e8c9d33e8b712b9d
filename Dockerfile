FROM python:3.11-slim
WORKDIR /app
# Evidence packs (WeasyPrint): Pango and the Noto CJK fonts, which the slim image lacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
       fontconfig fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps .
EXPOSE 9108
CMD ["muck", "--help"]
