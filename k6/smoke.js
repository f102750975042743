// Smoke/load script for the gateway: log in once, then read /api/v1/me and /api/v1/apps.
//   k6 run --quiet --no-usage-report -e BASE=http://127.0.0.1:8080 \
//     -e EMAIL=admin@example.com -e PASSWORD=... k6/smoke.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';

export const options = {
  vus: Number(__ENV.VUS || 4),
  duration: __ENV.DURATION || '10s',
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<500'], // the seed's API SLO: p95 < 500 ms
  },
};

export function setup() {
  const response = http.post(`${BASE}/api/v1/auth/login`,
    JSON.stringify({ email: __ENV.EMAIL, password: __ENV.PASSWORD }),
    { headers: { 'content-type': 'application/json' } });
  check(response, { 'login 200': (r) => r.status === 200 });
  return { token: response.json('access_token') };
}

export default function (data) {
  const params = { headers: { authorization: `Bearer ${data.token}` } };
  check(http.get(`${BASE}/api/v1/me`, params), { 'me 200': (r) => r.status === 200 });
  check(http.get(`${BASE}/api/v1/apps?page_size=50`, params), { 'apps 200': (r) => r.status === 200 });
}
