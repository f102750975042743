// GET /api/v1/releases?app=… (a page of 50, authenticated) at a constant arrival rate, or as
// fast as a fixed pool of virtual users can (saturation).
//   k6 run -e BASE=http://127.0.0.1:8080 -e TOKEN=… -e APP=bench -e MODE=rate -e RATE=1000 k6/releases-list.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';
const MODE = __ENV.MODE || 'rate';
const DURATION = __ENV.DURATION || '30s';

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
  scenarios: MODE === 'rate'
    ? {
        sustained: {
          executor: 'constant-arrival-rate',
          rate: Number(__ENV.RATE || 1000),
          timeUnit: '1s',
          duration: DURATION,
          preAllocatedVUs: Number(__ENV.VUS || 100),
          maxVUs: Number(__ENV.MAX_VUS || 400),
        },
      }
    : {
        saturation: {
          executor: 'constant-vus',
          vus: Number(__ENV.VUS || 32),
          duration: DURATION,
        },
      },
};

const params = { headers: { authorization: `Bearer ${__ENV.TOKEN}` } };

export default function () {
  const response = http.get(`${BASE}/api/v1/releases?app=${__ENV.APP || 'bench'}&page_size=50`, params);
  check(response, { 'status 200': (r) => r.status === 200 });
}
