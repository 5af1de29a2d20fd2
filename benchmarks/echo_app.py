"""The baseline for the HTTP benchmark: a trivial FastAPI JSON echo endpoint.

It parses the JSON body and serializes it back (orjson, like gradserve), so the comparison
measures what gradserve adds on top of "FastAPI + uvicorn + JSON" and nothing else.
"""

import orjson
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(orjson.dumps(orjson.loads(await request.body())), media_type="application/json")
