/* The enrolment page's script (enroll/enrol_page.py inlines it; its CSP hash is computed from this file): the kiosk
   camera's preview, fetched again 0.4 s after each picture arrives (each fetch also renews the daemon's sharing,
   edge/recognition/frameshare.py); a note instead while there is none; the capture button says it is busy, and
   the preview stops once the capture is sent. */
(function(){
var img=document.getElementById('enrol-preview'),wait=document.getElementById('enrol-wait'),on=true;
function next(ms){setTimeout(function(){if(on){img.src='/enrol/preview.jpg?t='+Date.now();}},ms);}
if(img){img.addEventListener('load',function(){img.className='live';if(wait){wait.className='wait hidden';}next(400);});
img.addEventListener('error',function(){img.className='';if(wait){wait.className='wait';}next(1000);});}
document.querySelectorAll('form.capture').forEach(function(f){f.addEventListener('submit',function(){on=false;
var b=f.querySelector('button');if(b&&b.getAttribute('data-busy')){b.textContent=b.getAttribute('data-busy');}});});
})();
